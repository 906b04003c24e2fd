/**
 * @module
 * OCI image-spec documents as ovm reads and writes them: descriptors, image
 * manifests (with OCI 1.1 `artifactType` and `subject`) and image indexes.
 * Unknown fields are kept (the OCI spec requires readers to ignore them).
 */
import { z } from "zod";
import { DigestSchema } from "./schema.ts";

export const MediaTypeString = z.string().regex(
  /^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}\/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$/,
  { message: "must be a media type such as application/vnd.oci.image.layer.v1.tar" },
);

export const DescriptorSchema = z.looseObject({
  mediaType: MediaTypeString,
  digest: DigestSchema,
  size: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
  urls: z.array(z.string()).optional(),
  annotations: z.record(z.string(), z.string()).optional(),
  data: z.string().optional(),
  artifactType: MediaTypeString.optional(),
  platform: z.looseObject({
    architecture: z.string(),
    os: z.string(),
    "os.version": z.string().optional(),
    "os.features": z.array(z.string()).optional(),
    variant: z.string().optional(),
  }).optional(),
});
export type Descriptor = z.infer<typeof DescriptorSchema>;

export const ImageManifestSchema = z.looseObject({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  artifactType: MediaTypeString.optional(),
  config: DescriptorSchema,
  layers: z.array(DescriptorSchema),
  subject: DescriptorSchema.optional(),
  annotations: z.record(z.string(), z.string()).optional(),
});
export type ImageManifest = z.infer<typeof ImageManifestSchema>;

export const ImageIndexSchema = z.looseObject({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  artifactType: MediaTypeString.optional(),
  manifests: z.array(DescriptorSchema),
  subject: DescriptorSchema.optional(),
  annotations: z.record(z.string(), z.string()).optional(),
});
export type ImageIndex = z.infer<typeof ImageIndexSchema>;

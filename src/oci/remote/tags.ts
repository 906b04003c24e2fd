/**
 * @module
 * A repository's tag list, following `Link: <...>; rel="next"` pages.
 */
import { parseJsonBytes } from "../../manifest/mod.ts";
import type { RepositoryClient } from "./client.ts";
import { nextLink, readBounded } from "./streams.ts";

const MAX_TAG_LIST_BYTES = 16 << 20;
const MAX_PAGES = 1000;

/** All tags of the repository behind `client`. */
export async function listTags(
  client: RepositoryClient,
  options: { signal?: AbortSignal } = {},
): Promise<string[]> {
  const tags: string[] = [];
  let url: URL | undefined = new URL(client.url("tags/list"));
  for (let page = 0; url && page < MAX_PAGES; page++) {
    const res: Response = await client.send({
      method: "GET",
      url,
      signal: options.signal,
      scopes: client.scopes(false),
    });
    if (!res.ok) await client.fail(res, "tag list");
    const doc = parseJsonBytes(await readBounded(res, MAX_TAG_LIST_BYTES), {
      source: "tag list",
      maxBytes: MAX_TAG_LIST_BYTES,
    }) as { tags?: string[] | null };
    tags.push(...(doc.tags ?? []));
    url = nextLink(res, url);
  }
  return tags;
}

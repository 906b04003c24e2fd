/**
 * @module
 * `ovm keygen`: makes an ECDSA P-256 signing key pair (`<prefix>.key`, 0600,
 * and `<prefix>.pub`), optionally passphrase-encrypted.
 */
import { ValidationError } from "../errors.ts";
import { generateKeyPair, writeKeyPair } from "../sign/mod.ts";
import { bool, type Command, str } from "./command.ts";

export const keygenCommand: Command = {
  name: "keygen",
  summary: "Create an ECDSA P-256 key pair for signing artifacts",
  usage: "keygen [--output-key-prefix PREFIX] [--passphrase-env VAR] [--format pkcs8|cosign]",
  description:
    "Writes PREFIX.key (PKCS#8 PEM, mode 0600) and PREFIX.pub (PKIX PEM). With --passphrase-env\n" +
    "the private key is encrypted with the passphrase read from that variable: as a standard\n" +
    "PKCS#8 ENCRYPTED PRIVATE KEY (PBES2: PBKDF2-HMAC-SHA256, AES-256-CBC), or with\n" +
    "--format cosign as cosign's ENCRYPTED SIGSTORE PRIVATE KEY (scrypt + NaCl secretbox),\n" +
    "which `cosign sign --key` also reads. Existing files are never overwritten.",
  args: { min: 0, max: 0 },
  options: {
    "output-key-prefix": {
      type: "string",
      valueName: "PREFIX",
      help: "Path prefix of the key files",
      default: "ovm",
    },
    "passphrase-env": {
      type: "string",
      valueName: "VAR",
      help: "Encrypt the private key with the passphrase in environment variable VAR",
    },
    format: {
      type: "string",
      valueName: "FMT",
      help: "Private key format: pkcs8 or cosign",
      default: "pkcs8",
    },
    force: { type: "boolean", help: "Overwrite existing key files" },
  },
  examples: [
    "ovm keygen --output-key-prefix release",
    "OVM_KEY_PASS=s3cret ovm keygen --passphrase-env OVM_KEY_PASS --format cosign",
  ],
  async run(ctx, input) {
    const prefix = str(input, "output-key-prefix") ?? "ovm";
    const format = str(input, "format") ?? "pkcs8";
    if (format !== "pkcs8" && format !== "cosign") {
      throw new ValidationError(`--format "${format}" is not a key format`, {
        hint: "use pkcs8 or cosign",
      });
    }
    const envName = str(input, "passphrase-env");
    let passphrase: string | undefined;
    if (envName !== undefined) {
      passphrase = ctx.env.get(envName);
      if (passphrase === undefined) {
        throw new ValidationError(`Environment variable "${envName}" is not set`, {
          hint: "export the passphrase in it, or drop --passphrase-env for an unencrypted key",
        });
      }
    }
    const pair = await generateKeyPair({ passphrase, format });
    const paths = await writeKeyPair(prefix, pair, { force: bool(input, "force") });
    ctx.out.result({
      ...paths,
      fingerprint: pair.fingerprint,
      encrypted: passphrase !== undefined || format === "cosign",
      format,
    });
    ctx.out.line(`private key: ${paths.privatePath}`);
    ctx.out.line(`public key:  ${paths.publicPath}`);
    ctx.out.line(`fingerprint: ${pair.fingerprint}`);
  },
};

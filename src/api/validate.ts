/**
 * @module
 * Checks responses against the OpenAPI document with a real JSON Schema
 * validator (Ajv, draft 2020-12): the tests and the conformance kit run
 * every answer they receive through {@linkcode ResponseValidator}.
 */
import { Ajv2020 } from "ajv/dist/2020.js";
import { parse } from "yaml";

type Doc = {
  paths: Record<string, Record<string, { responses: Record<string, unknown> }>>;
};

type Media = Record<string, { schema?: unknown }>;

export class ResponseValidator {
  readonly #doc: Doc;
  readonly #ajv: Ajv2020;
  readonly #cache = new Map<string, ReturnType<Ajv2020["compile"]>>();

  constructor(doc: Record<string, unknown>) {
    this.#doc = doc as Doc;
    this.#ajv = new Ajv2020({ strict: false, allErrors: true });
    // The whole document is one schema resource: `#/components/...` refs resolve inside it.
    this.#ajv.addSchema({ ...doc, $id: "ovms-openapi" });
  }

  static fromYaml(text: string): ResponseValidator {
    return new ResponseValidator(parse(text) as Record<string, unknown>);
  }

  /** The path template (`/status/{id}`) a concrete path matches, if any. */
  template(path: string): string | undefined {
    const p = path.split("?")[0];
    for (const t of Object.keys(this.#doc.paths)) {
      const re = new RegExp(`^${t.replace(/\{[^}]+\}/g, "[^/]+")}$`);
      if (re.test(p)) return t;
    }
    return undefined;
  }

  /**
   * Problems with one response (empty when it conforms): the status must be
   * documented for the operation (or `default`), and the body must match its
   * schema. For NDJSON, `body` is the array of records.
   */
  check(
    method: string,
    path: string,
    status: number,
    contentType: string | null,
    body: unknown,
  ): string[] {
    const t = this.template(path);
    if (!t) {
      // An undocumented path can only be refused: a 404 with the Error body.
      if (status !== 404) return [`${method} ${path}: no such path in the OpenAPI document`];
      return this.#validate("#/components/schemas/Error", [body], `${method} ${path} 404`);
    }
    const op = this.#doc.paths[t][method.toLowerCase()];
    if (!op) {
      if (status !== 405) return [`${method} ${t}: no such operation in the OpenAPI document`];
      return this.#validate("#/components/schemas/Error", [body], `${method} ${t} 405`);
    }
    const resp = (op.responses[String(status)] ?? op.responses.default) as
      | { content?: Media }
      | undefined;
    if (!resp) return [`${method} ${t}: status ${status} is not documented`];
    if (!resp.content) return [];
    const type = (contentType ?? "").split(";")[0].trim();
    if (!(type in resp.content)) {
      return [`${method} ${t} ${status}: content type "${type}" is not documented`];
    }
    const pointer = `#/paths/${
      t.replaceAll("~", "~0").replaceAll("/", "~1")
    }/${method.toLowerCase()}/responses/${status in op.responses ? status : "default"}/content/${
      type.replaceAll("/", "~1")
    }/schema`;
    const items = type === "application/x-ndjson" ? (body as unknown[]) : [body];
    return this.#validate(pointer, items, `${method} ${t} ${status}`);
  }

  #validate(pointer: string, items: unknown[], what: string): string[] {
    let v = this.#cache.get(pointer);
    if (!v) {
      v = this.#ajv.compile({ $ref: `ovms-openapi${pointer}` });
      this.#cache.set(pointer, v);
    }
    const out: string[] = [];
    for (const [i, item] of items.entries()) {
      if (!v(item)) {
        out.push(
          `${what}${items.length > 1 ? ` record ${i}` : ""}: ${this.#ajv.errorsText(v.errors)}`,
        );
      }
    }
    return out;
  }
}

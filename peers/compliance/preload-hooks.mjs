// Module hooks registered by preload.mjs: the compliance suite's report folder (`docsDir`, by
// default a `docs` folder inside its own package in node_modules) becomes $COMPLIANCE_REPORTS.
// The file on disk is not changed; its source is rewritten as it is loaded, and a suite whose
// constants.js no longer has the expected line stops the run instead of writing elsewhere.

const CONSTANTS = "/@ipfs-shipyard/pinning-service-compliance/dist/src/utils/constants.js"
const DOCS_DIR = "const docsDir = resolve(_dirname, '..', '..', 'docs');"

export async function load(url, context, nextLoad) {
  const loaded = await nextLoad(url, context)
  if (!url.endsWith(CONSTANTS)) return loaded
  const source = String(loaded.source)
  if (!source.includes(DOCS_DIR)) {
    throw new Error(`compliance-preload: ${url} has no line '${DOCS_DIR}'; update preload-hooks.mjs`)
  }
  return {
    ...loaded,
    source: source.replace(DOCS_DIR, "const docsDir = process.env.COMPLIANCE_REPORTS;"),
  }
}

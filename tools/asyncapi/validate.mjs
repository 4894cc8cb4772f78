// Validate an AsyncAPI document with the official parser (@asyncapi/parser).
// Usage: node validate.mjs PATH [--strict]
// Exits 1 if the parser reports any error (with --strict: any warning too), 2 on misuse.
import { Parser, fromFile } from '@asyncapi/parser';

const [path, ...flags] = process.argv.slice(2);
if (!path) {
  console.error('usage: node validate.mjs PATH [--strict]');
  process.exit(2);
}
const strict = flags.includes('--strict');
const { document, diagnostics } = await fromFile(new Parser(), path).parse();
// Spectral severities: 0 error, 1 warning, 2 information, 3 hint.
const names = ['error', 'warning', 'info', 'hint'];
for (const d of diagnostics) {
  const where = d.path && d.path.length ? d.path.join('.') : '(document)';
  console.log(`${names[d.severity] ?? d.severity} ${d.code}: ${d.message} at ${where}`);
}
const failing = diagnostics.filter((d) => d.severity === 0 || (strict && d.severity === 1));
if (!document || failing.length > 0) {
  console.error(`${path}: invalid (${failing.length} problem(s))`);
  process.exit(1);
}
console.log(`${path}: valid AsyncAPI ${document.version()}, ${document.channels().length} channels, ${document.operations().length} operations`);

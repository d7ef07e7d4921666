// Copies the pinned GraphiQL files (and their licences) from node_modules into vendor/,
// laid out as <package>@<version>/<path>. Run by `make graphiql-assets`.
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';

const [modules, target] = process.argv.slice(2);
const FILES = {
  react: ['umd/react.production.min.js', 'LICENSE'],
  'react-dom': ['umd/react-dom.production.min.js', 'LICENSE'],
  graphiql: ['graphiql.min.js', 'graphiql.min.css', 'LICENSE'],
  '@graphiql/plugin-explorer': ['dist/index.umd.js', 'dist/style.css', 'LICENSE'],
};

rmSync(target, { recursive: true, force: true });
for (const [name, files] of Object.entries(FILES)) {
  const { version } = JSON.parse(readFileSync(join(modules, name, 'package.json'), 'utf8'));
  for (const file of files) {
    // Some tarballs carry no LICENSE file; NOTICE states every licence.
    if (file === 'LICENSE' && !existsSync(join(modules, name, file))) continue;
    const destination = join(target, `${name}@${version}`, file);
    mkdirSync(dirname(destination), { recursive: true });
    cpSync(join(modules, name, file), destination);
    console.log(destination);
  }
}

/**
 * The module layout of the frontend (as in the extension template and jupyterlab-git):
 * features do not import each other, index.ts wires them, pure modules stay pure.
 */
import { readdirSync, readFileSync } from 'fs';
import { join } from 'path';

const SRC = join(__dirname, '..');
const FEATURES = ['badges', 'packaging', 'panel', 'runs', 'versions', 'markdialog'];
const PURE = ['markers', 'format', 'tokens', 'cycles', 'stepcolor', 'viewfmt'];

function localImports(module: string): string[] {
  const text = readFileSync(join(SRC, `${module}.ts`), 'utf-8');
  return Array.from(text.matchAll(/from '\.\/([\w-]+)'/g), match => match[1]);
}

function allImports(module: string): string[] {
  const text = readFileSync(join(SRC, `${module}.ts`), 'utf-8');
  return Array.from(text.matchAll(/from '([^']+)'/g), match => match[1]);
}

describe('the module layout', () => {
  const modules = readdirSync(SRC)
    .filter(name => name.endsWith('.ts'))
    .map(name => name.slice(0, -3));

  it('knows every feature module', () => {
    expect(modules).toEqual(expect.arrayContaining([...FEATURES, ...PURE, 'index']));
  });

  it.each(FEATURES)('feature %s imports no other feature and not index', feature => {
    const imported = localImports(feature);
    expect(imported.filter(name => [...FEATURES, 'index'].includes(name))).toEqual([]);
  });

  it.each(PURE)('%s is pure: it imports nothing but the shared types', module => {
    const imported = allImports(module);
    expect(imported.filter(name => !['./tokens'].includes(name))).toEqual([]);
  });

  it('has no import cycle', () => {
    const visiting = new Set<string>();
    const done = new Set<string>();
    const visit = (module: string, path: string[]): void => {
      if (done.has(module)) {
        return;
      }
      expect(visiting.has(module) ? [...path, module] : []).toEqual([]);
      visiting.add(module);
      localImports(module).forEach(next => visit(next, [...path, module]));
      visiting.delete(module);
      done.add(module);
    };
    modules.forEach(module => visit(module, []));
  });
});

/** The run form's typed parameters: a value of the wrong type is refused with one line. */
import { ParameterForm, parseParameter } from '../paramform';

describe('parseParameter', () => {
  it.each([
    ['int', ' 3 ', 3],
    ['int', '-12', -12],
    ['float', '0.25', 0.25],
    ['float', '1e-3', 0.001],
    ['str', 'red wine', 'red wine'],
    ['bool', 'false', false],
    ['list', '[1, "a"]', [1, 'a']],
    ['dict', '{"a": [1]}', { a: [1] }],
    ['any', 'null', null]
  ])('reads a %s from %p', (type, text, value) => {
    expect(parseParameter(type, text)).toEqual({ ok: true, value });
  });

  it.each([
    ['int', '2.5'],
    ['int', ''],
    ['float', 'abc'],
    ['float', ''],
    ['bool', 'yes'],
    ['list', '{"a": 1}'],
    ['dict', '[1]'],
    ['list', '[1,']
  ])('refuses a %s from %p with one line', (type, text) => {
    const parsed = parseParameter(type, text);
    expect(parsed.ok).toBe(false);
    expect(parsed.ok ? '' : parsed.error).not.toContain('\n');
  });
});

describe('ParameterForm', () => {
  const parameters = [
    { name: 'alpha', type: 'float', default: 1.0 },
    { name: 'seed', type: 'int', default: 42 },
    { name: 'label', type: 'str', default: 'wine' },
    { name: 'verbose', type: 'bool', default: false }
  ];

  function input(form: ParameterForm, name: string): HTMLInputElement {
    return form.node.querySelector(`[data-testid=dsops-run-param-${name}]`) as HTMLInputElement;
  }

  it('starts from the defaults and sends only the changed values', () => {
    const form = new ParameterForm(parameters);
    expect(input(form, 'label').value).toBe('wine');
    expect(form.values()).toEqual({});
    input(form, 'alpha').value = '0.5';
    input(form, 'verbose').checked = true;
    expect(form.values()).toEqual({ alpha: 0.5, verbose: true });
  });

  it('refuses the run and says which value is wrong', () => {
    const form = new ParameterForm(parameters);
    input(form, 'seed').value = 'many';
    expect(form.values()).toBeNull();
    const errors = Array.from(form.node.querySelectorAll('[data-testid=dsops-param-error]'))
      .map(node => node.textContent)
      .filter(Boolean);
    expect(errors).toEqual(['seed: an integer is needed, e.g. 3']);
  });
});

/**
 * The typed parameter form of the panel's Run: one input per parameter of the notebook,
 * checked against the parameter's type as the user types (a bad value is refused with one line).
 */
import { element } from './dom';
import { IParameter } from './tokens';

export type Parsed = { ok: true; value: unknown } | { ok: false; error: string };

const INTEGER = /^[+-]?\d+$/;

function parseJSON(text: string, expected: 'list' | 'dict' | 'any'): Parsed {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return {
      ok: false,
      error: `not valid JSON (e.g. ${expected === 'dict' ? '{"a": 1}' : '[1, 2]'})`
    };
  }
  if (expected === 'list' && !Array.isArray(value)) {
    return { ok: false, error: 'a list is needed, e.g. [1, 2]' };
  }
  const isDict = typeof value === 'object' && value !== null && !Array.isArray(value);
  if (expected === 'dict' && !isDict) {
    return { ok: false, error: 'a dict is needed, e.g. {"a": 1}' };
  }
  return { ok: true, value };
}

/** The value `text` gives a parameter of type `type`, or why it is refused (one line). */
export function parseParameter(type: string, text: string): Parsed {
  const trimmed = text.trim();
  switch (type) {
    case 'int':
      return INTEGER.test(trimmed)
        ? { ok: true, value: Number(trimmed) }
        : { ok: false, error: 'an integer is needed, e.g. 3' };
    case 'float': {
      const value = Number(trimmed);
      return trimmed !== '' && Number.isFinite(value)
        ? { ok: true, value }
        : { ok: false, error: 'a number is needed, e.g. 0.5' };
    }
    case 'str':
      return { ok: true, value: text };
    case 'bool':
      if (trimmed === 'true' || trimmed === 'false') {
        return { ok: true, value: trimmed === 'true' };
      }
      return { ok: false, error: 'true or false' };
    case 'list':
    case 'dict':
      return parseJSON(trimmed, type);
    default:
      return parseJSON(trimmed, 'any');
  }
}

/** The text an input starts with for a parameter's default value. */
export function defaultText(parameter: IParameter): string {
  if (parameter.type === 'str' && typeof parameter.default === 'string') {
    return parameter.default;
  }
  return JSON.stringify(parameter.default) ?? 'null';
}

interface IField {
  parameter: IParameter;
  read: () => Parsed;
  message: HTMLElement;
}

/** The form: `values()` gives the parameters that differ from their defaults, or null if refused. */
export class ParameterForm {
  readonly node: HTMLElement;
  private readonly _fields: IField[] = [];

  constructor(parameters: IParameter[]) {
    this.node = element('form', { class: 'dsops-ParamForm' });
    this.node.dataset.testid = 'dsops-param-form';
    this.node.addEventListener('submit', event => event.preventDefault());
    for (const parameter of parameters) {
      this.node.appendChild(this._row(parameter));
    }
  }

  /** The values to send (only those changed from their defaults); null if one is refused. */
  values(): Record<string, unknown> | null {
    const values: Record<string, unknown> = {};
    let valid = true;
    for (const field of this._fields) {
      const parsed = this._check(field);
      if (!parsed.ok) {
        valid = false;
      } else if (JSON.stringify(parsed.value) !== JSON.stringify(field.parameter.default)) {
        values[field.parameter.name] = parsed.value;
      }
    }
    return valid ? values : null;
  }

  private _check(field: IField): Parsed {
    const parsed = field.read();
    const error = parsed.ok ? '' : `${field.parameter.name}: ${parsed.error}`;
    field.message.textContent = error;
    field.message.hidden = error === '';
    return parsed;
  }

  private _row(parameter: IParameter): HTMLElement {
    const row = element('label', { class: 'dsops-ParamForm-row' });
    const name = element('span', { class: 'dsops-ParamForm-name' }, parameter.name);
    const type = element('span', { class: 'dsops-ParamForm-type' }, parameter.type);
    const input = element('input', { class: 'jp-mod-styled dsops-ParamForm-input' });
    input.dataset.testid = `dsops-run-param-${parameter.name}`;
    input.dataset.type = parameter.type;
    const message = element('div', { class: 'dsops-ParamForm-error' });
    message.dataset.testid = 'dsops-param-error';
    message.hidden = true;
    let read: () => Parsed;
    if (parameter.type === 'bool') {
      input.type = 'checkbox';
      input.checked = parameter.default === true;
      read = () => ({ ok: true, value: input.checked });
    } else {
      input.type = 'text';
      input.value = defaultText(parameter);
      read = () => parseParameter(parameter.type, input.value);
    }
    const field = { parameter, read, message };
    input.addEventListener('input', () => void this._check(field));
    this._fields.push(field);
    row.append(name, type, input, message);
    return row;
  }
}

/** A step of the panel's list: values passed, its status, and the failing line's link. */
import { paintStepStatus, stepItem } from '../steplist';
import { IStep } from '../tokens';

const step: IStep = {
  name: 'train',
  cells: [7, 8],
  after: [],
  depends_on: ['features'],
  reads: ['X_train', 'y_train', 'f'],
  writes: ['model', 'fig'],
  inputs: ['X_train', 'y_train'],
  outputs: ['model']
};

describe('stepItem and paintStepStatus', () => {
  it('lists the values received and passed, not every name read or written', () => {
    const item = stepItem(step, { reveal: () => undefined, run: () => undefined });
    expect(item.querySelector('[data-testid=dsops-step-io]')?.textContent).toBe(
      'receives X_train, y_train · passes model'
    );
  });

  it('links a failure to its cell and line, and clears when the status goes', () => {
    const revealed: Array<[number, number | undefined]> = [];
    const item = stepItem(step, { reveal: () => undefined, run: () => undefined });
    const reveal = (cell: number, line?: number): number => revealed.push([cell, line]);
    paintStepStatus(
      item,
      { state: 'failed', duration: 2.04, cell: 8, line: 3, error: 'ValueError: bad' },
      reveal
    );
    expect(item.dataset.state).toBe('failed');
    expect(item.querySelector('[data-testid=dsops-step-state]')?.textContent).toBe(
      'failed in 2.0 s'
    );
    const link = item.querySelector('[data-testid=dsops-failure-link]') as HTMLElement;
    expect(link.textContent).toBe('cell 9, line 3');
    link.click();
    expect(revealed).toEqual([[8, 3]]);
    paintStepStatus(item, undefined, reveal);
    expect(item.dataset.state).toBeUndefined();
    expect(item.querySelector('[data-testid=dsops-failure-link]')).toBeNull();
  });
});

/** Texts the extension shows: error lines and durations. */
import { cacheMark, errorMessage, formatSeconds, jobDuration } from '../format';
import { IJob } from '../tokens';

function job(created: number, finished: number | null): IJob {
  return {
    id: 'j',
    kind: 'run',
    path: 'nb.ipynb',
    state: finished === null ? 'running' : 'succeeded',
    stage: '',
    progress: 0,
    log: [],
    created,
    finished,
    error: null,
    options: {},
    steps: {},
    stages: [],
    result: null
  };
}

describe('errorMessage', () => {
  it('keeps the first line of an error or of anything thrown', () => {
    expect(errorMessage(new Error('bad marker\ntraceback'))).toBe('bad marker');
    expect(errorMessage('plain\ntext')).toBe('plain');
    expect(errorMessage(42)).toBe('42');
  });
});

describe('formatSeconds', () => {
  it.each([
    [0, '0.0 s'],
    [4.25, '4.3 s'],
    [59.94, '59.9 s'],
    [60, '1 min 0 s'],
    [125.4, '2 min 5 s']
  ])('%d s reads %s', (seconds, text) => {
    expect(formatSeconds(seconds)).toBe(text);
  });
});

describe('jobDuration', () => {
  it('is null while the job runs, else its wall time (never negative)', () => {
    expect(jobDuration(job(10, null))).toBeNull();
    expect(jobDuration(job(10, 12.5))).toBe(2.5);
    expect(jobDuration(job(10, 9))).toBe(0);
  });
});

describe('cacheMark', () => {
  it('marks a fresh step and says why a stale one is stale', () => {
    expect(cacheMark({ fresh: true, reasons: [] }).text).toBe('fresh');
    const stale = cacheMark({ fresh: false, reasons: ['code changed', 'parameter n changed'] });
    expect(stale.text).toBe('stale');
    expect(stale.title).toBe('Stale: code changed; parameter n changed');
  });
});

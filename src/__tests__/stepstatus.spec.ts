/** Step statuses of a job: live from its step events, final from its run record. */
import { asStepState, failureWhere, jobStepStatuses, statusText } from '../stepstatus';
import { IJob, IRunRecord, IStepStatus, JobState } from '../tokens';

function runJob(
  state: JobState,
  steps: Record<string, IStepStatus>,
  result: IRunRecord | null = null
): IJob {
  return {
    id: 'j',
    kind: 'run',
    path: 'nb.ipynb',
    state,
    stage: '',
    progress: 0,
    log: [],
    created: 100,
    finished: state === 'running' ? null : 110,
    error: null,
    options: {},
    steps,
    stages: [],
    result
  };
}

function record(steps: IRunRecord['steps']): IRunRecord {
  return {
    notebook: 'nb.ipynb',
    output_notebook: 'out.ipynb',
    record: 'run.json',
    status: 'failed',
    parameters: {},
    steps,
    started: '',
    duration: 9
  };
}

const live = (state: IStepStatus['state'], duration: number | null = null): IStepStatus => ({
  state,
  duration
});

describe('jobStepStatuses', () => {
  it('reads the live states while the job runs', () => {
    const job = runJob('running', { load: live('done', 8.4), train: live('running') });
    const statuses = jobStepStatuses(job);
    expect(statuses.get('load')).toMatchObject({ state: 'done', duration: 8.4 });
    expect(statuses.get('train')?.state).toBe('running');
  });

  it('takes the run record as final, the failure on the step that failed', () => {
    const failed = runJob(
      'failed',
      { load: live('done', 1), train: live('running'), report: live('queued') },
      record([
        { name: 'load', status: 'done', state: 'done', duration: 1.25 },
        {
          name: 'train',
          status: 'failed',
          state: 'failed',
          duration: 0.5,
          cell: 4,
          line: 2,
          error: 'ZeroDivisionError: division by zero'
        },
        { name: 'report', status: 'skipped', state: 'skipped', duration: null }
      ])
    );
    const statuses = jobStepStatuses(failed);
    expect(statuses.get('load')).toMatchObject({ state: 'done', duration: 1.25 });
    expect(statuses.get('train')).toMatchObject({ state: 'failed', cell: 4, line: 2 });
    expect(statuses.get('report')?.state).toBe('skipped');
  });

  it('reads a step restored from the cache as cached', () => {
    const job = runJob(
      'succeeded',
      {},
      record([{ name: 'load', status: 'done', state: 'done', duration: 0, restored: true }])
    );
    expect(jobStepStatuses(job).get('load')?.state).toBe('cached');
  });

  it('marks steps a cancelled job left queued or running as skipped', () => {
    const job = runJob('cancelled', { load: live('done', 2), train: live('running') });
    const statuses = jobStepStatuses(job);
    expect(statuses.get('load')?.state).toBe('done');
    expect(statuses.get('train')).toMatchObject({ state: 'skipped', duration: null });
  });
});

describe('asStepState', () => {
  it.each([
    ['done', 'done'],
    ['succeeded', 'done'],
    ['not run', 'skipped'],
    ['cached', 'cached'],
    ['nonsense', null],
    [null, null]
  ])('reads %p as %p', (word, state) => {
    expect(asStepState(word)).toBe(state);
  });
});

describe('statusText and failureWhere', () => {
  it("says the step's own duration", () => {
    expect(statusText(live('done', 8.4))).toBe('done in 8.4 s');
    expect(statusText(live('failed', 0.31))).toBe('failed in 0.3 s');
    expect(statusText(live('queued'))).toBe('queued');
    expect(statusText(live('running'))).toBe('running…');
    const running = { ...live('running'), started: 1000 };
    expect(statusText(running, 1003.24)).toBe('running 3.2 s');
    expect(statusText(running, 999)).toBe('running 0.0 s'); // a client clock behind the server's
  });

  it('points at the failing cell and line, 1-based', () => {
    expect(failureWhere({ state: 'failed', duration: 1, cell: 4, line: 2 })).toBe('cell 5, line 2');
    expect(failureWhere({ state: 'failed', duration: 1, cell: 0 })).toBe('cell 1');
    expect(failureWhere({ state: 'done', duration: 1, cell: 4, line: 2 })).toBeNull();
  });
});

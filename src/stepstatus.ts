/**
 * Per-step status of a job: what ran, how long, and where a step failed. Pure: no DOM.
 *
 * A job reports its steps live (`job.steps`, from the core's step events) and, once a run
 * ends, in its run record (`job.result.steps`, kept on a failed run too): the record is final.
 */
import { formatSeconds } from './format';
import { IJob, IStepRun, IStepStatus, StepState } from './tokens';

export const STEP_STATES: readonly StepState[] = [
  'queued',
  'running',
  'done',
  'failed',
  'skipped',
  'cached'
];

/** Earlier run records named the final states differently: read them as today's. */
const RECORD_STATES: Record<string, StepState> = {
  succeeded: 'done',
  'not run': 'skipped',
  interrupted: 'skipped'
};

/** The StepState a record's `status` (or a live `state`) names; null for an unknown word. */
export function asStepState(word: string | null | undefined): StepState | null {
  if (!word) {
    return null;
  }
  if ((STEP_STATES as readonly string[]).includes(word)) {
    return word as StepState;
  }
  return RECORD_STATES[word] ?? null;
}

/** A run record's step as a status: a step restored from the cache reads `cached`. */
export function recordStatus(step: IStepRun): IStepStatus | null {
  let state = asStepState(step.status ?? step.state);
  if (state === null) {
    return null;
  }
  if (state === 'done' && step.restored === true && step.executed !== true) {
    state = 'cached';
  }
  return {
    state,
    duration: typeof step.duration === 'number' ? step.duration : null,
    cell: step.cell ?? null,
    line: step.line ?? null,
    error: step.error ?? null
  };
}

export function isActive(job: IJob): boolean {
  return job.state === 'queued' || job.state === 'running';
}

/**
 * The statuses of the steps a job ran, by name: live ones while it runs, the record's once
 * it ended. A step still queued or running when the job ended without saying more was not
 * finished by it: `skipped`.
 */
export function jobStepStatuses(job: IJob): Map<string, IStepStatus> {
  const statuses = new Map<string, IStepStatus>();
  for (const [name, status] of Object.entries(job.steps ?? {})) {
    const state = asStepState(status.state);
    if (state !== null) {
      statuses.set(name, { ...status, state });
    }
  }
  const record = job.kind === 'run' ? job.result : null;
  for (const step of record?.steps ?? []) {
    const status = recordStatus(step);
    if (status !== null) {
      statuses.set(step.name, status);
    }
  }
  if (!isActive(job)) {
    for (const [name, status] of statuses) {
      if (status.state === 'queued' || status.state === 'running') {
        statuses.set(name, { ...status, state: 'skipped', duration: null, started: null });
      }
    }
  }
  return statuses;
}

/**
 * The one line a step's status reads as: "done in 8.4 s", "failed in 0.3 s", "queued",
 * "running 3.2 s" (counted from when it started, `now` in seconds since the epoch).
 */
export function statusText(status: IStepStatus, now: number = Date.now() / 1000): string {
  const known = typeof status.duration === 'number';
  const duration = known ? ` in ${formatSeconds(status.duration as number)}` : '';
  switch (status.state) {
    case 'running':
      return typeof status.started === 'number'
        ? `running ${formatSeconds(Math.max(0, now - status.started))}`
        : 'running…';
    case 'cached':
      return 'restored from the cache';
    case 'done':
    case 'failed':
      return `${status.state}${duration}`;
    default:
      return status.state;
  }
}

/** Where a failed step failed: "cell 4, line 2" (1-based, as the notebook shows them). */
export function failureWhere(status: IStepStatus): string | null {
  if (status.state !== 'failed' || typeof status.cell !== 'number') {
    return null;
  }
  const line = typeof status.line === 'number' ? `, line ${status.line}` : '';
  return `cell ${status.cell + 1}${line}`;
}

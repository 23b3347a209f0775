/**
 * Text of what the extension shows: error lines, durations. Pure: no DOM, no JupyterLab.
 */
import { IJob, IStepState } from './tokens';

/** The one-line message of anything thrown. */
export function errorMessage(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return text.split('\n')[0];
}

/** A job's wall time in seconds, or null while it runs. */
export function jobDuration(job: IJob): number | null {
  if (job.finished === null || job.finished === undefined) {
    return null;
  }
  return Math.max(0, job.finished - job.created);
}

/** "4.2 s" under a minute, else "2 min 5 s". */
export function formatSeconds(seconds: number): string {
  if (seconds < 60) {
    return `${seconds.toFixed(1)} s`;
  }
  const minutes = Math.floor(seconds / 60);
  return `${minutes} min ${Math.round(seconds - minutes * 60)} s`;
}

/** A step's cache mark: "fresh", or "stale" with why as its tooltip. */
export function cacheMark(state: IStepState): { text: string; title: string } {
  if (state.fresh) {
    return {
      text: 'fresh',
      title: 'Its outputs are in the step cache: a cached run restores them'
    };
  }
  return { text: 'stale', title: `Stale: ${state.reasons.join('; ')}` };
}

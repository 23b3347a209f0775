/**
 * Typed client of the dsops server routes (see the REST contract).
 *
 * Every action of the frontend goes through these calls: the Python core owns
 * all pipeline logic, the frontend only renders what the server answers.
 */
import { requestAPI } from './request';
import { IJob, IJobOptions, IPipeline, JobKind } from './tokens';

/** The pipeline the core reads from the notebook at `path` (as saved on disk). */
export function getPipeline(path: string): Promise<IPipeline> {
  return requestAPI<IPipeline>('pipeline', { method: 'GET' }, { path });
}

/** Start a background job; the server answers 202 with the queued job. */
export function startJob(kind: JobKind, path: string, options: IJobOptions): Promise<IJob> {
  return requestAPI<IJob>('jobs', {
    method: 'POST',
    body: JSON.stringify({ kind, path, options })
  });
}

export function getJob(id: string): Promise<IJob> {
  return requestAPI<IJob>(`jobs/${encodeURIComponent(id)}`, { method: 'GET' });
}

export function isFinished(job: IJob): boolean {
  return job.state === 'succeeded' || job.state === 'failed';
}

function sleep(ms: number): Promise<void> {
  return new Promise(resolve => setTimeout(resolve, ms));
}

/**
 * Poll a job every `intervalMs` until it finishes, reporting every state seen.
 * `cancelled()` lets the caller stop watching (the job itself goes on).
 */
export async function watchJob(
  job: IJob,
  onUpdate: (job: IJob) => void,
  cancelled: () => boolean = () => false,
  intervalMs = 500
): Promise<IJob> {
  let current = job;
  onUpdate(current);
  while (!isFinished(current) && !cancelled()) {
    await sleep(intervalMs);
    current = await getJob(current.id);
    onUpdate(current);
  }
  return current;
}

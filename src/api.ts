/**
 * Typed client of the dsops server routes (see the REST contract).
 *
 * Every action of the frontend goes through these calls: the Python core owns
 * all pipeline logic, the frontend only renders what the server answers.
 */
import { DsopsResponseError, requestAPI } from './request';
import {
  IJob,
  IJobOptions,
  IPipeline,
  IRunNotebook,
  IRunSummary,
  IVersionEntry,
  IVersionFile,
  JobKind
} from './tokens';

/** The pipeline the core reads from the notebook at `path` (as saved on disk). */
export function getPipeline(path: string): Promise<IPipeline> {
  return requestAPI<IPipeline>('pipeline', { method: 'GET' }, { path });
}

/** The pipeline of the notebook as edited (unsaved `content`, nbformat JSON). */
export function describePipeline(path: string, content: unknown): Promise<IPipeline> {
  return requestAPI<IPipeline>('pipeline', {
    method: 'POST',
    body: JSON.stringify({ path, content })
  });
}

/** Start a background job; the server answers 202 with the queued job. */
export function startJob(kind: JobKind, path: string, options: IJobOptions): Promise<IJob> {
  return requestAPI<IJob>('jobs', {
    method: 'POST',
    body: JSON.stringify({ kind, path, options })
  });
}

/**
 * The notebook's active job when `error` is the 409 a busy notebook answers to `startJob`
 * (`{"error", "job"}`): show it (and offer Cancel) instead of an error. Null otherwise.
 */
export function busyJob(error: unknown): IJob | null {
  if (!(error instanceof DsopsResponseError) || error.response.status !== 409) {
    return null;
  }
  const data = error.data;
  if (data && typeof data === 'object' && 'job' in data) {
    return (data as { job: IJob }).job;
  }
  return null;
}

export function getJob(id: string): Promise<IJob> {
  return requestAPI<IJob>(`jobs/${encodeURIComponent(id)}`, { method: 'GET' });
}

/** Jobs newest first; only those of notebook `path` when given. */
export async function listJobs(path?: string): Promise<IJob[]> {
  const query = path === undefined ? undefined : { path };
  const answer = await requestAPI<{ jobs: IJob[] }>('jobs', { method: 'GET' }, query);
  return answer.jobs;
}

/** Ask the server to stop a job: it ends `cancelled` (kernel shut down, build stopped). */
export function cancelJob(id: string): Promise<IJob> {
  return requestAPI<IJob>(`jobs/${encodeURIComponent(id)}/cancel`, { method: 'POST' });
}

/** Past runs of the notebook at `path`, newest first. */
export async function listRuns(path: string): Promise<IRunSummary[]> {
  const answer = await requestAPI<{ runs: IRunSummary[] }>('runs', { method: 'GET' }, { path });
  return answer.runs;
}

/** The executed notebook of the notebook's run in folder `dir` (as `listRuns` gives it). */
export async function getRunNotebook(path: string, dir: string): Promise<IRunNotebook> {
  return requestAPI<IRunNotebook>('runs/notebook', { method: 'GET' }, { path, dir });
}

/** The versions `dsops/<name>/v<N>` of the notebook at `path`, newest first. */
export async function listVersions(path: string): Promise<IVersionEntry[]> {
  const answer = await requestAPI<{ versions: IVersionEntry[] }>(
    'versions',
    { method: 'GET' },
    { path }
  );
  return answer.versions;
}

/** One file of a version (default: its script), read from the tag's Git tree. */
export function getVersionFile(path: string, tag: string, file?: string): Promise<IVersionFile> {
  const query: Record<string, string> = { path, tag };
  if (file !== undefined) {
    query.file = file;
  }
  return requestAPI<IVersionFile>('versions/file', { method: 'GET' }, query);
}

export function isFinished(job: IJob): boolean {
  return job.state === 'succeeded' || job.state === 'failed' || job.state === 'cancelled';
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

/** The job working on notebook `path` now (queued or running), else null. */
export async function activeJob(path: string): Promise<IJob | null> {
  return (await listJobs(path)).find(job => !isFinished(job)) ?? null;
}

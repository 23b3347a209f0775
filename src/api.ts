/**
 * Typed client of the dsops server routes (see the REST contract).
 *
 * Every action of the frontend goes through these calls: the Python core owns
 * all pipeline logic, the frontend only renders what the server answers.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export interface IStep {
  name: string;
  cells: number[];
  after: string[];
  depends_on: string[];
  reads: string[];
  writes: string[];
}

export interface IParameter {
  name: string;
  type: 'int' | 'float' | 'str' | 'bool' | 'list' | 'dict' | 'any' | string;
  default: unknown;
}

export interface IPipeline {
  name: string;
  notebook: string;
  content_hash: string;
  steps: IStep[];
  parameters: IParameter[];
  output_dir?: string;
}

export type JobKind = 'package' | 'run';
export type JobState = 'queued' | 'running' | 'succeeded' | 'failed';

/**
 * The options a client may set, as the server reads them into the core's
 * PackageOptions / RunOptions (dsops_jupyter/model.py), which own the defaults:
 * an option left out takes the core's default (`build`: true, as `dsops package`).
 */
export interface IJobOptions {
  name?: string;
  commit?: boolean;
  build?: boolean;
  smoke?: boolean;
  force?: boolean;
  parameters?: Record<string, unknown>;
  steps?: string[];
}

export interface IStepRun {
  name: string;
  status: string;
  duration?: number | null;
}

/** A tagged version: model.Version.to_json(). */
export interface IVersion {
  name: string;
  number: number;
  tag: string;
  commit: string;
  short: string;
  epoch: number;
  message: string;
}

/** A built image: `id`, `tags`, `size`, plus the builder's own facts. */
export interface IImage {
  id: string;
  tags: string[];
  size?: number;
  [key: string]: unknown;
}

/** The one result of a package job: model.PackageResult.to_json(), paths relative to the server root. */
export interface IPackageResult {
  version: IVersion | null;
  created: boolean;
  package_dir: string;
  script: string;
  image: IImage | null;
  smoke: { exit_code: number; log: string[]; workdir: string | null } | null;
  pushed: string[];
  output: string | null;
  unresolved_imports: string[];
}

/** The one result of a run job: model.RunRecord.to_json() (run.json), paths relative to the server root. */
export interface IRunRecord {
  notebook: string;
  output_notebook: string;
  record: string;
  status: string;
  parameters: Record<string, unknown>;
  steps: IStepRun[];
  started: string;
  duration: number;
  [key: string]: unknown; // environment, verification, warnings
}

interface IJobState {
  id: string;
  path: string;
  state: JobState;
  stage: string;
  progress: number;
  log: string[];
  created: number;
  finished: number | null;
  interrupted?: boolean;
  error: string | null;
}

/** A job; its `kind` says which result it carries once succeeded. */
export type IJob =
  | (IJobState & { kind: 'package'; result: IPackageResult | null })
  | (IJobState & { kind: 'run'; result: IRunRecord | null });

/** An error answered by the server: its one-line message, ready to show. */
export class DsopsAPIError extends Error {
  constructor(
    message: string,
    readonly status: number
  ) {
    super(message);
    this.name = 'DsopsAPIError';
  }
}

/** Call a `dsops/` route; JSON in and out, `{"error"}` bodies become DsopsAPIError. */
export async function requestAPI<T>(
  endPoint: string,
  init: RequestInit = {},
  query: Record<string, string> = {}
): Promise<T> {
  const settings = ServerConnection.makeSettings();
  let url = URLExt.join(settings.baseUrl, 'dsops', endPoint);
  if (Object.keys(query).length > 0) {
    url += URLExt.objectToQueryString(query);
  }
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new DsopsAPIError(`cannot reach the Jupyter server: ${String(error)}`, 0);
  }
  const text = await response.text();
  let data: unknown = null;
  if (text.length > 0) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!response.ok) {
    throw new DsopsAPIError(errorLine(data, response), response.status);
  }
  return data as T;
}

function errorLine(data: unknown, response: Response): string {
  if (data && typeof data === 'object' && 'error' in data) {
    const error = (data as { error: unknown }).error;
    if (typeof error === 'string' && error.length > 0) {
      return error.split('\n')[0];
    }
  }
  if (response.status === 404) {
    return 'the dsops server extension is not enabled on this Jupyter server (404)';
  }
  return `${response.status} ${response.statusText}`.trim();
}

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

/** A job's wall time in seconds, or null while it runs. */
export function jobDuration(job: IJob): number | null {
  if (job.finished === null || job.finished === undefined) {
    return null;
  }
  return Math.max(0, job.finished - job.created);
}

export function formatSeconds(seconds: number): string {
  if (seconds < 60) {
    return `${seconds.toFixed(1)} s`;
  }
  const minutes = Math.floor(seconds / 60);
  return `${minutes} min ${Math.round(seconds - minutes * 60)} s`;
}

/**
 * Shared names of the frontend: command IDs and the types of the dsops server routes.
 *
 * Feature modules import these instead of each other (the extension template's and
 * jupyterlab-git's `tokens.ts`).
 */

/** The IDs of the commands the extension adds. */
export namespace CommandIDs {
  export const packageNotebook = 'dsops:package-notebook';
  export const markStep = 'dsops:mark-step';
  export const markParameters = 'dsops:mark-parameters';
  export const markSkip = 'dsops:mark-skip';
  export const clearMarker = 'dsops:clear-marker';
  export const showPanel = 'dsops:show-panel';
}

export interface IStep {
  name: string;
  cells: number[];
  after: string[];
  depends_on: string[];
  reads: string[];
  writes: string[];
  /** Against the step cache, with the notebook's default parameters. */
  state?: IStepState;
}

export interface IStepState {
  fresh: boolean;
  reasons: string[];
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
  /** Also write the version's pipeline for this engine (`dsops package --export`). */
  export?: ExportEngine | null;
}

/** The engines `dsops export` writes pipelines for (model.EXPORT_ENGINES). */
export const EXPORT_ENGINES = ['kfp', 'airflow', 'argo'] as const;
export type ExportEngine = (typeof EXPORT_ENGINES)[number];

/** What an export wrote: export.ExportResult.to_json(). */
export interface IExportResult {
  engine: ExportEngine;
  path: string;
  files: string[];
  image: string;
  image_id: string;
  names: Record<string, string>;
  notes: string[];
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
  exported: IExportResult | null;
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

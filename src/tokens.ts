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
  export const showRuns = 'dsops:show-runs';
  export const showVersions = 'dsops:show-versions';
}

export interface IStep {
  name: string;
  cells: number[];
  after: string[];
  depends_on: string[];
  reads: string[];
  writes: string[];
  /** Names this step receives from earlier steps / passes to later ones (no throwaway names). */
  inputs: string[];
  outputs: string[];
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

/** An edge of the step graph: `names` passed from `source` to `target` (data), or an `after`. */
export interface IEdge {
  source: string;
  target: string;
  kind: 'data' | 'after';
  names: string[];
}

/** A line that drives dsops itself (`%dsops ...`, `%load_ext dsops_jupyter`): left out of runs. */
export interface IInteractiveLine {
  cell: number;
  line: number;
  text: string;
}

export interface IPipeline {
  name: string;
  notebook: string;
  content_hash: string;
  steps: IStep[];
  edges: IEdge[];
  parameters: IParameter[];
  interactive: IInteractiveLine[];
  output_dir?: string;
}

export type JobKind = 'package' | 'run';
export type JobState = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled';

/** A step's state in a job: live while it runs, final in its record. */
export type StepState = 'queued' | 'running' | 'done' | 'failed' | 'skipped' | 'cached';

export interface IStepStatus {
  state: StepState;
  /** Seconds the step's cells ran (null while queued/running). */
  duration: number | null;
  /** For a failed step: the failing cell (notebook index), its 1-based line, one-line error. */
  cell?: number | null;
  line?: number | null;
  error?: string | null;
  /** A running step: when it started (server clock, seconds since the epoch). */
  started?: number | null;
}

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
  /** Run the notebook (papermill) first: no version unless it passes. */
  verify?: boolean;
  /** The image builder: 'assemble' (default, layer assembler) or 'dockerfile'. */
  builder?: Builder;
}

export const BUILDERS = ['assemble', 'dockerfile'] as const;
export type Builder = (typeof BUILDERS)[number];

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

/** A step in a run record (run.json): `status` is the final StepState. */
export interface IStepRun extends IStepStatus {
  name: string;
  /** The record's final state (C4: done/cached/failed/skipped). */
  status?: string;
  executed?: boolean;
  restored?: boolean;
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

/** A version as the Versions view lists it: its image (if one is known) and its script. */
export interface IVersionEntry extends IVersion {
  image: { ref: string; id: string | null } | null;
  /** The script's path in the version's tree (relative to the repository root). */
  script: string;
}

/** One file of a version, read from its Git tree (for the diff and the read-only view). */
export interface IVersionFile {
  tag: string;
  file: string;
  content: string;
}

/** The executed notebook of a listed run (GET /dsops/runs/notebook), nbformat JSON. */
export interface IRunNotebook {
  /** The run folder, relative to the server root. */
  dir: string;
  output_notebook: string;
  content: Record<string, unknown>;
}

/** A past run (run.json of a run folder), newest first in the Runs view. */
export interface IRunSummary {
  /** The run folder, relative to the server root. */
  dir: string;
  status: string;
  parameters: Record<string, unknown>;
  started: string;
  duration: number;
  output_notebook: string;
  steps: IStepRun[];
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

/** A stage of a job, for the weighted progress bar and the "what ran" view. */
export interface IStage {
  name: string;
  started: number;
  duration: number | null;
}

interface IJobState {
  id: string;
  path: string;
  state: JobState;
  stage: string;
  /** The core's last progress message in the stage, e.g. the build's "step 3 of 13". */
  detail?: string;
  progress: number;
  log: string[];
  created: number;
  finished: number | null;
  interrupted?: boolean;
  error: string | null;
  /** The options the job was started with (parameters, steps, ...). */
  options: IJobOptions;
  /** Per step, live: filled by run jobs (and package jobs that verify). */
  steps: Record<string, IStepStatus>;
  stages: IStage[];
}

/** A job; its `kind` says which result it carries (a failed run job keeps its run record). */
export type IJob =
  | (IJobState & { kind: 'package'; result: IPackageResult | null })
  | (IJobState & { kind: 'run'; result: IRunRecord | null });

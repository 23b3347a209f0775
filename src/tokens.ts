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

export interface IJobResult {
  version?: string | null;
  tag?: string | null;
  commit?: string | null;
  short?: string | null;
  created?: boolean;
  script?: string | null;
  package_dir?: string | null;
  image?: { id: string; tags: string[]; size?: number } | null;
  smoke?: { exit_code: number; log?: string[]; workdir?: string | null } | null;
  unresolved_imports?: string[];
  run?: {
    status: string;
    output_notebook?: string;
    steps?: IStepRun[];
  } | null;
  [key: string]: unknown;
}

export interface IJob {
  id: string;
  kind: JobKind;
  path: string;
  state: JobState;
  stage: string;
  progress: number;
  log: string[];
  created: number;
  finished: number | null;
  interrupted?: boolean;
  error: string | null;
  result: IJobResult | null;
}

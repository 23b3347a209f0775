/**
 * `requestAPI`: the one HTTP call of the extension, to the `dsops/` server routes.
 *
 * As in the extension template and jupyterlab-git: the app's server settings, JSON in and
 * out, failures as `ServerConnection.ResponseError` (the server's one-line `{"error"}`
 * message) or `ServerConnection.NetworkError` (server unreachable).
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

let serverSettings: ServerConnection.ISettings | null = null;

/** Use the app's server settings (`app.serviceManager.serverSettings`) for every request. */
export function useServerSettings(settings: ServerConnection.ISettings): void {
  serverSettings = settings;
}

/** Call a `dsops/` route; JSON in and out. */
export async function requestAPI<T>(
  endPoint: string,
  init: RequestInit = {},
  query: Record<string, string> = {}
): Promise<T> {
  const settings = serverSettings ?? ServerConnection.makeSettings();
  let url = URLExt.join(settings.baseUrl, 'dsops', endPoint);
  if (Object.keys(query).length > 0) {
    url += URLExt.objectToQueryString(query);
  }
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    const reason = `cannot reach the Jupyter server: ${String(error)}`;
    throw new ServerConnection.NetworkError(new TypeError(reason));
  }
  const text = await response.text();
  const data = text.length > 0 ? parseJSON(text) : null;
  if (!response.ok) {
    throw new DsopsResponseError(response, errorLine(data, response), data);
  }
  return data as T;
}

/** A failed response with the server's parsed JSON answer (e.g. a 409's `job`). */
export class DsopsResponseError extends ServerConnection.ResponseError {
  constructor(
    response: Response,
    message: string,
    readonly data: unknown
  ) {
    super(response, message);
  }
}

function parseJSON(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** The one line to show for a failed response: the server's `error`, else the status. */
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

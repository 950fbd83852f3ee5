// The REST API 1.0 over fetch (same origin: the session cookie or the client certificate
// rides along), its envelope, operations and websockets.

export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

export interface Operation {
  id: string;
  class: string;
  description: string;
  created_at: string;
  status: string;
  status_code: number;
  resources: Record<string, string[]> | null;
  metadata: any;
  err: string;
}

interface Envelope {
  type: 'sync' | 'async' | 'error';
  metadata: any;
  operation?: string;
  error?: string;
  error_code?: number;
}

/** Called when the server says we are not (or no longer) logged in. */
let onUnauthorized: () => void = () => {};
export function setUnauthorizedHandler(f: () => void) {
  onUnauthorized = f;
}

async function send(method: string, path: string, body?: unknown): Promise<Envelope> {
  const init: RequestInit = { method, credentials: 'same-origin', headers: {} };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    (init.headers as Record<string, string>)['Content-Type'] = 'application/json';
  }
  let resp: Response;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new ApiError(`cannot reach the server: ${(e as Error).message}`, 0);
  }
  const text = await resp.text();
  let env: Envelope | undefined;
  try {
    env = JSON.parse(text);
  } catch {
    env = undefined;
  }
  if (!resp.ok || !env || env.type === 'error') {
    const message = env?.error || text.trim() || `${resp.status} ${resp.statusText}`;
    if (resp.status === 403 && path !== '/1.0') onUnauthorized();
    throw new ApiError(message, resp.status);
  }
  return env;
}

/** A synchronous request: its `metadata`. */
export async function get<T = any>(path: string): Promise<T> {
  return (await send('GET', path)).metadata as T;
}

/** Any request; an async answer is waited for. Returns the final metadata. */
export async function call<T = any>(method: string, path: string, body?: unknown): Promise<T> {
  const env = await send(method, path, body);
  if (env.type === 'async' && env.operation) {
    const op = await waitOperation(env.operation);
    return op.metadata as T;
  }
  return env.metadata as T;
}

/** Start an async request and return its operation as first answered (not waited for). */
export async function start(method: string, path: string, body?: unknown): Promise<Operation> {
  const env = await send(method, path, body);
  if (env.type !== 'async') throw new ApiError('expected an operation', 0);
  return env.metadata as Operation;
}

/** Wait for an operation to end; a failure becomes an ApiError with its text. */
export async function waitOperation(url: string): Promise<Operation> {
  for (;;) {
    const op = await get<Operation>(`${url}/wait?timeout=30`);
    if (op.status === 'Success') return op;
    if (op.status === 'Failure' || op.status === 'Cancelled') {
      throw new ApiError(op.err || `operation ${op.status.toLowerCase()}`, 0);
    }
  }
}

/** A websocket on the same origin (the cookie rides on the handshake). */
export function socket(path: string): WebSocket {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const ws = new WebSocket(`${scheme}//${location.host}${path}`);
  ws.binaryType = 'arraybuffer';
  return ws;
}

export function operationSocket(op: Operation, fd: string): WebSocket {
  const secret = op.metadata?.fds?.[fd];
  return socket(`/1.0/operations/${encodeURIComponent(op.id)}/websocket?secret=${encodeURIComponent(secret)}`);
}

export function enc(name: string): string {
  return encodeURIComponent(name);
}

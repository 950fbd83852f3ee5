// The terminal tab (an interactive exec) and the console tab (the console websocket and
// its log), both drawn by TermView.

import { useEffect, useRef, useState } from 'preact/hooks';
import { enc, operationSocket, start, type Operation } from './api';
import { TermView } from './terminal';
import { showError } from './util';

type Phase = 'connecting' | 'connected' | 'ended';

/** Connect a TermView to an operation's `0` and `control` websockets. */
function useSession(host: { current: HTMLDivElement | null }, open: (cols: number, rows: number) => Promise<Operation>, generation: number) {
  const [phase, setPhase] = useState<Phase>('connecting');
  const [size, setSize] = useState('');
  useEffect(() => {
    const el = host.current;
    if (!el) return;
    let data: WebSocket | null = null;
    let control: WebSocket | null = null;
    let disposed = false;
    const pending: Uint8Array[] = [];
    const view = new TermView(el, {
      onInput: (bytes) => {
        if (data?.readyState === WebSocket.OPEN) data.send(bytes);
        else pending.push(bytes);
      },
      onResize: (cols, rows) => {
        setSize(`${cols}×${rows}`);
        if (control?.readyState === WebSocket.OPEN) {
          control.send(JSON.stringify({ command: 'window-resize', args: { width: String(cols), height: String(rows) } }));
        }
      },
    });
    setSize(`${view.cols}×${view.rows}`);
    setPhase('connecting');
    view.focus();
    open(view.cols, view.rows)
      .then((op) => {
        if (disposed) return;
        data = operationSocket(op, '0');
        control = operationSocket(op, 'control');
        data.onopen = () => {
          setPhase('connected');
          for (const b of pending.splice(0)) data?.send(b);
        };
        data.onmessage = (m) => {
          if (typeof m.data === 'string') {
            if (m.data === '') data?.close();
            else view.write(m.data);
          } else {
            view.write(new Uint8Array(m.data as ArrayBuffer));
          }
        };
        data.onclose = () => {
          if (!disposed) setPhase('ended');
          control?.close();
        };
        control.onopen = () => {
          // The size may have changed while connecting.
          control?.send(JSON.stringify({ command: 'window-resize', args: { width: String(view.cols), height: String(view.rows) } }));
        };
      })
      .catch((e) => {
        showError(e);
        setPhase('ended');
      });
    return () => {
      disposed = true;
      data?.close();
      control?.close();
      view.dispose();
    };
  }, [generation]);
  return { phase, size };
}

export function TerminalTab(props: { name: string; status: string }) {
  const host = useRef<HTMLDivElement>(null);
  const [generation, setGeneration] = useState(0);
  const { phase, size } = useSession(
    host,
    (cols, rows) =>
      start('POST', `/1.0/instances/${enc(props.name)}/exec`, {
        command: ['/bin/sh', '-c', 'if command -v bash >/dev/null; then exec bash -l; else exec sh -l; fi'],
        environment: { TERM: 'xterm-256color', HOME: '/root', USER: 'root' },
        interactive: true,
        'wait-for-websocket': true,
        width: cols,
        height: rows,
      }),
    generation,
  );
  return (
    <div class="session">
      <div class="session-bar">
        <span data-testid="terminal-phase" data-phase={phase}>
          {phase === 'connecting' ? 'Connecting…' : phase === 'connected' ? 'Connected' : 'Session ended'}
        </span>
        <span data-testid="terminal-size">{size}</span>
        <button type="button" data-testid="terminal-reconnect" onClick={() => setGeneration((g) => g + 1)}>
          {phase === 'ended' ? 'Reconnect' : 'New session'}
        </button>
      </div>
      <div class="term-host" data-testid="terminal" ref={host} />
    </div>
  );
}

export function ConsoleTab(props: { name: string }) {
  const host = useRef<HTMLDivElement>(null);
  const [generation, setGeneration] = useState(0);
  const [log, setLog] = useState<string | null>(null);
  const { phase } = useSession(
    host,
    (cols, rows) => start('POST', `/1.0/instances/${enc(props.name)}/console`, { width: cols, height: rows, type: 'console' }),
    generation,
  );
  const showLog = async () => {
    try {
      const resp = await fetch(`/1.0/instances/${enc(props.name)}/console`, { credentials: 'same-origin' });
      const text = await resp.text();
      if (!resp.ok) {
        let message = text;
        try {
          message = JSON.parse(text).error || text;
        } catch {
          // Not an envelope: the text as it is.
        }
        throw new Error(message);
      }
      setLog(text);
    } catch (e) {
      showError(e);
    }
  };
  return (
    <div class="session">
      <div class="session-bar">
        <span data-testid="console-phase" data-phase={phase}>
          {phase === 'connecting' ? 'Attaching…' : phase === 'connected' ? 'Attached to the console' : 'Detached'}
        </span>
        <button type="button" onClick={() => setGeneration((g) => g + 1)}>
          Reattach
        </button>
        <button type="button" data-testid="console-show-log" onClick={showLog}>
          Show log
        </button>
      </div>
      <div class="term-host" data-testid="console" ref={host} />
      {log !== null && (
        <pre class="log" data-testid="console-log">
          {log || '(empty)'}
        </pre>
      )}
    </div>
  );
}

// A terminal: xterm.js' emulator (@xterm/headless: parser, buffer, modes) drawn by a small
// DOM renderer of our own, one element per row. xterm.js' own renderers either insert
// <style> elements (DOM), which the UI's Content-Security-Policy refuses, or need WebGL;
// this one only sets classes and CSSOM properties from script, which the policy allows.

import { Terminal, type IBufferCell } from '@xterm/headless';

const encoder = new TextEncoder();

/** Escape sequences of the keys that are not text. */
function keySequence(e: KeyboardEvent, appCursor: boolean): string | undefined {
  const csi = appCursor ? '\x1bO' : '\x1b[';
  switch (e.key) {
    case 'Enter':
      return '\r';
    case 'Backspace':
      return e.ctrlKey ? '\x08' : '\x7f';
    case 'Tab':
      return e.shiftKey ? '\x1b[Z' : '\t';
    case 'Escape':
      return '\x1b';
    case 'ArrowUp':
      return `${csi}A`;
    case 'ArrowDown':
      return `${csi}B`;
    case 'ArrowRight':
      return `${csi}C`;
    case 'ArrowLeft':
      return `${csi}D`;
    case 'Home':
      return `${csi}H`;
    case 'End':
      return `${csi}F`;
    case 'Insert':
      return '\x1b[2~';
    case 'Delete':
      return '\x1b[3~';
    case 'PageUp':
      return '\x1b[5~';
    case 'PageDown':
      return '\x1b[6~';
  }
  const fn = /^F([1-9]|1[0-2])$/.exec(e.key);
  if (fn) {
    const codes = ['OP', 'OQ', 'OR', 'OS', '[15~', '[17~', '[18~', '[19~', '[20~', '[21~', '[23~', '[24~'];
    return `\x1b${codes[Number(fn[1]) - 1]}`;
  }
  if (e.key.length !== 1 || e.metaKey) return undefined;
  if (e.ctrlKey && !e.altKey) {
    const c = e.key.toUpperCase().charCodeAt(0);
    if (c >= 64 && c <= 95) return String.fromCharCode(c - 64);
    if (e.key === ' ') return '\x00';
    if (e.key === '?') return '\x7f';
    return undefined;
  }
  return e.altKey ? `\x1b${e.key}` : e.key;
}

/** CSS colour of a 256-colour palette entry from 16 on (0-15 are classes). */
function palette256(n: number): string {
  if (n < 232) {
    const i = n - 16;
    const level = (v: number) => (v === 0 ? 0 : 55 + v * 40);
    return `rgb(${level(Math.floor(i / 36))},${level(Math.floor(i / 6) % 6)},${level(i % 6)})`;
  }
  const g = 8 + (n - 232) * 10;
  return `rgb(${g},${g},${g})`;
}

function rgb(n: number): string {
  return `#${n.toString(16).padStart(6, '0')}`;
}

interface Style {
  cls: string;
  fg: string;
  bg: string;
}

function styleOf(cell: IBufferCell): Style {
  const cls: string[] = [];
  let fg = '';
  let bg = '';
  let fgClass = '';
  let bgClass = '';
  if (cell.isFgPalette()) {
    const n = cell.getFgColor();
    if (n < 16) fgClass = `fg${n}`;
    else fg = palette256(n);
  } else if (cell.isFgRGB()) fg = rgb(cell.getFgColor());
  if (cell.isBgPalette()) {
    const n = cell.getBgColor();
    if (n < 16) bgClass = `bg${n}`;
    else bg = palette256(n);
  } else if (cell.isBgRGB()) bg = rgb(cell.getBgColor());
  if (cell.isInverse()) {
    cls.push('inverse');
    [fg, bg] = [bg, fg];
    fgClass = fgClass.replace('fg', 'bg');
    bgClass = bgClass.replace('bg', 'fg');
    [fgClass, bgClass] = [bgClass, fgClass];
  }
  if (fgClass) cls.push(fgClass);
  if (bgClass) cls.push(bgClass);
  if (cell.isBold()) cls.push('bold');
  if (cell.isItalic()) cls.push('italic');
  if (cell.isDim()) cls.push('dim');
  if (cell.isUnderline()) cls.push('underline');
  if (cell.isInvisible()) cls.push('invisible');
  return { cls: cls.join(' '), fg, bg };
}

export interface TermOptions {
  /** Bytes or text typed by the user (to send to the remote side). */
  onInput: (data: Uint8Array) => void;
  /** The terminal's size changed (to tell the remote side). */
  onResize: (cols: number, rows: number) => void;
}

export class TermView {
  readonly term: Terminal;
  private readonly rowsEl: HTMLElement;
  private rowEls: HTMLElement[] = [];
  private rowKeys: string[] = [];
  private frame = 0;
  private readonly observer: ResizeObserver;
  private readonly cell: IBufferCell;
  private charW = 8;
  private charH = 17;

  constructor(
    private readonly host: HTMLElement,
    private readonly opts: TermOptions,
  ) {
    this.term = new Terminal({ cols: 80, rows: 24, scrollback: 2000, allowProposedApi: true });
    this.cell = this.term.buffer.active.getNullCell();
    host.classList.add('term');
    host.tabIndex = 0;
    this.rowsEl = document.createElement('div');
    this.rowsEl.className = 'term-rows';
    this.rowsEl.setAttribute('data-testid', 'terminal-rows');
    host.replaceChildren(this.rowsEl);
    this.measure();
    this.term.onWriteParsed(() => this.schedule());
    this.term.onScroll(() => this.schedule());
    // Answers to the remote side's queries (cursor position, device attributes).
    this.term.onData((d) => this.opts.onInput(encoder.encode(d)));
    host.addEventListener('keydown', (e) => this.key(e));
    host.addEventListener('paste', (e) => this.paste(e));
    host.addEventListener('wheel', (e) => {
      e.preventDefault();
      this.term.scrollLines(Math.sign(e.deltaY) * 3);
    });
    this.observer = new ResizeObserver(() => this.fit());
    this.observer.observe(host);
    this.fit();
    this.render();
  }

  write(data: Uint8Array | string) {
    this.term.write(data);
  }

  focus() {
    this.host.focus();
  }

  get cols() {
    return this.term.cols;
  }

  get rows() {
    return this.term.rows;
  }

  dispose() {
    this.observer.disconnect();
    cancelAnimationFrame(this.frame);
    this.term.dispose();
  }

  /** The visible text, one line per row (trailing blanks trimmed). */
  text(): string {
    const buf = this.term.buffer.active;
    const lines: string[] = [];
    for (let y = 0; y < this.term.rows; y++) {
      lines.push(buf.getLine(buf.viewportY + y)?.translateToString(true) ?? '');
    }
    return lines.join('\n');
  }

  private measure() {
    const probe = document.createElement('span');
    probe.className = 'term-probe';
    probe.textContent = 'W'.repeat(50);
    this.rowsEl.appendChild(probe);
    const r = probe.getBoundingClientRect();
    if (r.width > 0) this.charW = r.width / 50;
    if (r.height > 0) this.charH = r.height;
    probe.remove();
  }

  /** Fit the terminal to its element's size. */
  fit() {
    this.measure();
    const style = getComputedStyle(this.host);
    const padX = parseFloat(style.paddingLeft) + parseFloat(style.paddingRight);
    const padY = parseFloat(style.paddingTop) + parseFloat(style.paddingBottom);
    const cols = Math.max(10, Math.floor((this.host.clientWidth - padX) / this.charW));
    const rows = Math.max(4, Math.floor((this.host.clientHeight - padY) / this.charH));
    this.host.dataset.cols = String(cols);
    this.host.dataset.rows = String(rows);
    if (cols === this.term.cols && rows === this.term.rows) return;
    this.term.resize(cols, rows);
    this.opts.onResize(cols, rows);
    this.schedule();
  }

  private key(e: KeyboardEvent) {
    if (e.isComposing) return;
    // Let the browser keep its copy shortcut when text is selected.
    if ((e.ctrlKey || e.metaKey) && e.key === 'c' && getSelection()?.toString()) return;
    if ((e.ctrlKey && e.shiftKey && e.key === 'V') || (e.metaKey && e.key === 'v')) return;
    const seq = keySequence(e, this.term.modes.applicationCursorKeysMode);
    if (seq === undefined) return;
    e.preventDefault();
    this.term.scrollToBottom();
    this.opts.onInput(encoder.encode(seq));
  }

  private paste(e: ClipboardEvent) {
    const text = e.clipboardData?.getData('text/plain');
    if (!text) return;
    e.preventDefault();
    const body = text.replace(/\r?\n/g, '\r');
    const data = this.term.modes.bracketedPasteMode ? `\x1b[200~${body}\x1b[201~` : body;
    this.opts.onInput(encoder.encode(data));
  }

  private schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.render();
    });
  }

  private render() {
    const buf = this.term.buffer.active;
    const rows = this.term.rows;
    while (this.rowEls.length < rows) {
      const el = document.createElement('div');
      el.className = 'term-row';
      this.rowsEl.appendChild(el);
      this.rowEls.push(el);
      this.rowKeys.push('');
    }
    while (this.rowEls.length > rows) {
      this.rowEls.pop()?.remove();
      this.rowKeys.pop();
    }
    const cursorRow = buf.baseY + buf.cursorY - buf.viewportY;
    for (let y = 0; y < rows; y++) {
      const line = buf.getLine(buf.viewportY + y);
      const cursorX = y === cursorRow ? buf.cursorX : -1;
      this.renderRow(y, line, cursorX);
    }
    this.host.dataset.cursor = `${buf.cursorX},${buf.cursorY}`;
  }

  private renderRow(y: number, line: ReturnType<Terminal['buffer']['active']['getLine']>, cursorX: number) {
    const el = this.rowEls[y];
    if (!line) {
      if (this.rowKeys[y] !== '') {
        el.replaceChildren();
        this.rowKeys[y] = '';
      }
      return;
    }
    // Runs of cells with one style.
    const runs: { text: string; style: Style; cursor: boolean }[] = [];
    let key = `${cursorX}|`;
    const width = Math.min(line.length, this.term.cols);
    let last = width;
    // Trailing default blanks are not drawn (except up to the cursor).
    while (last > 0) {
      const c = line.getCell(last - 1, this.cell);
      if (!c || c.getChars() !== '' || !c.isAttributeDefault() || last - 1 === cursorX) break;
      last--;
    }
    for (let x = 0; x < Math.max(last, cursorX + 1); x++) {
      const c = line.getCell(x, this.cell);
      if (c && c.getWidth() === 0) continue;
      const chars = c ? c.getChars() || ' ' : ' ';
      const style = c ? styleOf(c) : { cls: '', fg: '', bg: '' };
      const cursor = x === cursorX;
      const prev = runs[runs.length - 1];
      if (prev && !cursor && !prev.cursor && prev.style.cls === style.cls && prev.style.fg === style.fg && prev.style.bg === style.bg) {
        prev.text += chars;
      } else {
        runs.push({ text: chars, style, cursor });
      }
      key += `${chars}\u0000${style.cls}\u0000${style.fg}\u0000${style.bg}\u0001`;
    }
    if (this.rowKeys[y] === key) return;
    this.rowKeys[y] = key;
    if (runs.length === 1 && !runs[0].style.cls && !runs[0].style.fg && !runs[0].style.bg && !runs[0].cursor) {
      el.textContent = runs[0].text;
      return;
    }
    const spans = runs.map((r) => {
      const s = document.createElement('span');
      s.textContent = r.text;
      if (r.style.cls || r.cursor) s.className = `${r.style.cls}${r.cursor ? ' cursor' : ''}`.trim();
      if (r.style.fg) s.style.color = r.style.fg;
      if (r.style.bg) s.style.backgroundColor = r.style.bg;
      return s;
    });
    el.replaceChildren(...spans);
  }
}

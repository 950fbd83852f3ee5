// In-app links: history navigation without a reload.

import type { ComponentChildren } from 'preact';
import { navigate } from './util';

export function Link(props: { to: string; children: ComponentChildren; testid?: string; class?: string }) {
  return (
    <a
      href={props.to}
      class={props.class}
      data-testid={props.testid}
      onClick={(e) => {
        if (e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
        e.preventDefault();
        navigate(props.to);
      }}
    >
      {props.children}
    </a>
  );
}

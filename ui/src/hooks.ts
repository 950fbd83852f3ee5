// Preact hooks over the app's signals and the API.

import { useEffect, useState } from 'preact/hooks';
import { get } from './api';
import { Signal, showError } from './util';

export function useSignal<T>(s: Signal<T>): T {
  const [v, setV] = useState(s.value);
  useEffect(() => {
    setV(s.value);
    return s.subscribe(setV);
  }, [s]);
  return v;
}

/** GET `path` now and whenever `deps` or `tick` change; errors go to the banner. */
export function useGet<T>(path: string, tick = 0): [T | undefined, () => void] {
  const [data, setData] = useState<T | undefined>(undefined);
  const [n, setN] = useState(0);
  useEffect(() => {
    let live = true;
    get<T>(path)
      .then((d) => live && setData(d))
      .catch((e) => live && showError(e));
    return () => {
      live = false;
    };
  }, [path, tick, n]);
  return [data, () => setN((x) => x + 1)];
}

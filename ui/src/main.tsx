// The ctl dashboard: entry point, login state, layout and routes (all under /ui/).

import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { get, setUnauthorizedHandler } from './api';
import { useSignal } from './hooks';
import { InstancePage } from './instance';
import { InstancesPage } from './instances';
import { Link } from './link';
import { ImagesPage, NetworksPage, OperationsPage, ProfilesPage } from './resources';
import { instances } from './store';
import { errorText, route } from './util';
import './style.css';

type Auth = 'checking' | 'in' | 'out' | 'unreachable';

const NAV = [
  ['/ui/', 'Instances'],
  ['/ui/images', 'Images'],
  ['/ui/networks', 'Networks'],
  ['/ui/profiles', 'Profiles'],
  ['/ui/operations', 'Operations'],
] as const;

function Page(props: { path: string }) {
  const parts = props.path.replace(/^\/ui\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  switch (parts[0]) {
    case undefined:
    case 'instances':
      return parts[1] ? <InstancePage name={parts[1]} tab={parts[2] || 'overview'} /> : <InstancesPage />;
    case 'images':
      return <ImagesPage />;
    case 'networks':
      return <NetworksPage />;
    case 'profiles':
      return <ProfilesPage />;
    case 'operations':
      return <OperationsPage />;
    default:
      return <p class="empty">No such page.</p>;
  }
}

function LoggedOut(props: { why: Auth }) {
  return (
    <main class="login" data-testid="logged-out">
      <h1>ctl</h1>
      {props.why === 'unreachable' ? (
        <p>The server cannot be reached.</p>
      ) : (
        <>
          <p>You are not logged in.</p>
          <p>
            On the server, run <code>ctl ui</code> and open the single-use link it prints, or use a browser client certificate that the server
            trusts.
          </p>
        </>
      )}
    </main>
  );
}

function App() {
  const [auth, setAuth] = useState<Auth>('checking');
  const path = useSignal(route);
  const error = useSignal(errorText);
  useEffect(() => {
    setUnauthorizedHandler(() => setAuth('out'));
    get<any>('/1.0')
      .then((s) => setAuth(s.auth === 'trusted' ? 'in' : 'out'))
      .catch(() => setAuth('unreachable'));
  }, []);
  useEffect(() => (auth === 'in' ? instances.use() : undefined), [auth]);
  // Errors belong to the page they happened on.
  useEffect(() => errorText.set(''), [path]);
  if (auth === 'checking') return <main class="login">Loading…</main>;
  if (auth !== 'in') return <LoggedOut why={auth} />;
  const logout = async () => {
    try {
      await fetch('/ui/logout', { method: 'POST', credentials: 'same-origin' });
    } finally {
      setAuth('out');
    }
  };
  return (
    <>
      <header>
        <Link to="/ui/" class="brand">
          ctl
        </Link>
        <nav>
          {NAV.map(([to, label]) => (
            <Link to={to} class={(to === '/ui/' ? /^\/ui\/?(instances.*)?$/.test(path) : path.startsWith(to)) ? 'active' : ''} testid={`nav-${label.toLowerCase()}`}>
              {label}
            </Link>
          ))}
        </nav>
        <button type="button" data-testid="logout" onClick={logout}>
          Log out
        </button>
      </header>
      {error && (
        <div class="banner" role="alert" data-testid="error">
          <span>{error}</span>
          <button type="button" aria-label="dismiss" onClick={() => errorText.set('')}>
            ×
          </button>
        </div>
      )}
      <main>
        <Page path={path} />
      </main>
    </>
  );
}

const root = document.getElementById('app');
if (root) render(<App />, root);

/**
 * The "MPC consortium" side panel: sites, recent queries and the policy in force.
 */
import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import type { IQueryInfo, ISiteInfo, IStateMessage } from './protocol';

const ICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <circle cx="12" cy="4.5" r="2.5"/><circle cx="4.5" cy="18" r="2.5"/><circle cx="19.5" cy="18" r="2.5"/>
    <path d="M11 7h2v4.2l5.6 4.6-1.3 1.5L12 13l-5.3 4.3-1.3-1.5L11 11.2z"/>
  </g>
</svg>`;

export const consortiumIcon = new LabIcon({ name: 'mpc-jupyter:consortium', svgstr: ICON_SVG });

interface ISourceState {
  kernelId: string;
  path: string;
  state: IStateMessage;
  received: Date;
}

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className?: string,
  text?: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) {
    node.className = className;
  }
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

function section(title: string): HTMLElement {
  const node = el('section', 'jp-MpcPanel-section');
  node.appendChild(el('h3', 'jp-MpcPanel-heading', title));
  return node;
}

function shortDigest(digest: string | undefined, length = 12): string {
  return digest ? digest.slice(0, length) : '—';
}

function formatValue(value: unknown): string {
  if (value === null || value === undefined) {
    return '—';
  }
  if (typeof value === 'object') {
    return JSON.stringify(value);
  }
  return String(value);
}

/** A site's row, then a row with its tables (a narrow sidebar has no room for a column of them). */
function renderSite(site: ISiteInfo): HTMLElement[] {
  const row = el('tr', 'jp-MpcPanel-site');
  row.dataset.site = site.name;
  const status = el('td');
  const dot = el('span', `jp-MpcPanel-status ${site.online ? 'jp-mod-online' : 'jp-mod-offline'}`);
  dot.title = site.online ? 'online' : 'offline';
  status.appendChild(dot);
  row.appendChild(status);
  const name = el('td', 'jp-MpcPanel-siteName', site.name);
  name.title = site.address ?? '';
  row.appendChild(name);
  const latency = site.online && typeof site.latency_ms === 'number' ? `${Math.round(site.latency_ms)} ms` : '—';
  row.appendChild(el('td', 'jp-MpcPanel-latency', latency));
  const policy = el('td', 'jp-MpcPanel-digest', shortDigest(site.policy_digest, 8));
  policy.title = site.policy_digest ?? '';
  row.appendChild(policy);
  if (!site.tables?.length) {
    return [row];
  }
  const tables = el('tr', 'jp-MpcPanel-siteTables');
  tables.appendChild(el('td'));
  const list = el('td', 'jp-MpcPanel-tables', site.tables.join(', '));
  list.colSpan = 3;
  tables.appendChild(list);
  return [row, tables];
}

function renderQuery(query: IQueryInfo): HTMLElement {
  const item = el('li', 'jp-MpcPanel-query');
  item.dataset.queryId = query.id;
  item.appendChild(el('pre', 'jp-MpcPanel-queryText', query.text));
  const facts: string[] = [];
  if (typeof query.seconds === 'number') {
    facts.push(`${query.seconds.toFixed(2)} s`);
  }
  if (query.sites?.length) {
    facts.push(`sites: ${query.sites.join(', ')}`);
  }
  if (query.suppressed) {
    facts.push(`${query.suppressed} suppressed`);
  }
  item.appendChild(el('div', 'jp-MpcPanel-queryFacts', facts.join(' · ')));
  if (query.reveals?.length) {
    const reveals = el('ul', 'jp-MpcPanel-reveals');
    for (const reveal of query.reveals) {
      const { name, ...rest } = reveal;
      const detail = Object.entries(rest)
        .map(([key, value]) => `${key}=${formatValue(value)}`)
        .join(', ');
      reveals.appendChild(el('li', undefined, `revealed ${name ?? '?'}${detail ? ` (${detail})` : ''}`));
    }
    item.appendChild(reveals);
  }
  if (query.receipts?.length) {
    const details = el('details', 'jp-MpcPanel-receipts');
    details.appendChild(el('summary', undefined, `${query.receipts.length} receipt(s)`));
    const list = el('ul');
    for (const receipt of query.receipts) {
      const text = receipt.site
        ? `${receipt.site}: ${shortDigest(typeof receipt.digest === 'string' ? receipt.digest : undefined)}`
        : formatValue(receipt);
      const entry = el('li', undefined, text);
      entry.title = JSON.stringify(receipt);
      list.appendChild(entry);
    }
    details.appendChild(list);
    item.appendChild(details);
  }
  return item;
}

/** Side panel showing the latest state published by a notebook's kernel. */
export class ConsortiumPanel extends Widget {
  private _states = new Map<string, ISourceState>();
  private _currentPath: string | null = null;

  constructor() {
    super();
    this.id = 'mpc-jupyter-consortium';
    this.addClass('jp-MpcPanel');
    this.title.icon = consortiumIcon;
    this.title.caption = 'MPC consortium';
    this.render();
  }

  /** Record a state published by a kernel. */
  updateState(source: { kernelId: string; path: string }, state: IStateMessage): void {
    this._states.set(source.kernelId, { ...source, state, received: new Date() });
    this.render();
  }

  /** Prefer the state of this notebook (the one in focus). */
  set currentPath(path: string | null) {
    this._currentPath = path;
    this.render();
  }

  /** The state on display: the focused notebook's, else the latest received. */
  get shown(): ISourceState | null {
    let latest: ISourceState | null = null;
    for (const entry of this._states.values()) {
      if (this._currentPath !== null && entry.path === this._currentPath) {
        return entry;
      }
      if (!latest || entry.received > latest.received) {
        latest = entry;
      }
    }
    return latest;
  }

  render(): void {
    const root = this.node;
    root.replaceChildren();
    root.appendChild(el('h2', 'jp-MpcPanel-title', 'MPC consortium'));
    const shown = this.shown;
    if (!shown) {
      root.appendChild(
        el('p', 'jp-MpcPanel-empty', 'No consortium yet: run an %%mpc cell in a notebook to connect.')
      );
      return;
    }
    const { consortium, sites, queries } = shown.state;
    root.appendChild(el('div', 'jp-MpcPanel-source', `from ${shown.path}`));

    const info = section('Consortium and policy');
    const dl = el('dl', 'jp-MpcPanel-consortium');
    const { policy, ...rest } = consortium;
    for (const [key, value] of Object.entries(rest)) {
      dl.appendChild(el('dt', undefined, key));
      dl.appendChild(el('dd', undefined, formatValue(value)));
    }
    info.appendChild(dl);
    if (policy && Object.keys(policy).length) {
      const table = el('table', 'jp-MpcPanel-policy');
      for (const [key, value] of Object.entries(policy)) {
        const row = el('tr');
        row.appendChild(el('th', undefined, key));
        row.appendChild(el('td', undefined, formatValue(value)));
        table.appendChild(row);
      }
      info.appendChild(table);
    }
    root.appendChild(info);

    const online = sites.filter(site => site.online).length;
    const siteSection = section(`Sites (${online}/${sites.length} online)`);
    const table = el('table', 'jp-MpcPanel-sites');
    const head = el('tr');
    for (const title of ['', 'site', 'latency', 'policy']) {
      head.appendChild(el('th', undefined, title));
    }
    table.appendChild(head);
    for (const site of sites) {
      table.append(...renderSite(site));
    }
    siteSection.appendChild(table);
    root.appendChild(siteSection);

    const querySection = section('Recent queries');
    if (queries.length) {
      const list = el('ol', 'jp-MpcPanel-queries');
      // Most recent first.
      for (const query of [...queries].reverse()) {
        list.appendChild(renderQuery(query));
      }
      querySection.appendChild(list);
    } else {
      querySection.appendChild(el('p', 'jp-MpcPanel-empty', 'No query yet.'));
    }
    root.appendChild(querySection);
  }
}

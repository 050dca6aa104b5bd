/**
 * The `mpc_jupyter.panel` comm protocol (see docs/labextension.md).
 *
 * The kernel (`mpc_jupyter.panel.PanelPublisher`) opens a comm with this
 * target and sends `state` messages, the open message included. The frontend
 * may send `request_state` on a comm to get the latest state again.
 */

export const COMM_TARGET = 'mpc_jupyter.panel';

export interface IConsortiumInfo {
  name?: string;
  analyst?: string;
  /** The disclosure policy in force (strictest-wins combination of the sites'). */
  policy?: Record<string, unknown>;
  policy_digest?: string;
  [key: string]: unknown;
}

export interface ISiteInfo {
  name: string;
  address?: string;
  online?: boolean;
  latency_ms?: number | null;
  policy_digest?: string;
  tables?: string[];
}

export interface IReceipt {
  site?: string;
  digest?: string;
  [key: string]: unknown;
}

export interface IReveal {
  /** What was revealed, e.g. a column or an aggregate. */
  name?: string;
  rows?: number;
  [key: string]: unknown;
}

export interface IQueryInfo {
  id: string;
  text: string;
  seconds?: number;
  sites?: string[];
  receipts?: IReceipt[];
  reveals?: IReveal[];
  suppressed?: number;
}

export interface IStateMessage {
  type: 'state';
  consortium: IConsortiumInfo;
  sites: ISiteInfo[];
  queries: IQueryInfo[];
}

/** Parse a comm payload, returning the state message or null for anything else. */
export function asState(data: unknown): IStateMessage | null {
  if (!data || typeof data !== 'object') {
    return null;
  }
  const msg = data as Partial<IStateMessage>;
  if (msg.type !== 'state') {
    return null;
  }
  return {
    type: 'state',
    consortium: msg.consortium && typeof msg.consortium === 'object' ? msg.consortium : {},
    sites: Array.isArray(msg.sites) ? msg.sites : [],
    queries: Array.isArray(msg.queries) ? msg.queries : []
  };
}

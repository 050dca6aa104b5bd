/**
 * Listen to the `mpc_jupyter.panel` comm of every notebook's kernel.
 */
import type { ISessionContext } from '@jupyterlab/apputils';
import type { Kernel, KernelMessage } from '@jupyterlab/services';

import { asState, COMM_TARGET, IStateMessage } from './protocol';

/** Called with each state received: the kernel it came from and its notebook path. */
export type StateHandler = (source: { kernelId: string; path: string }, state: IStateMessage) => void;

const attached = new WeakSet<Kernel.IKernelConnection>();

function listen(comm: Kernel.IComm, deliver: (data: unknown) => void): void {
  comm.onMsg = (msg: KernelMessage.ICommMsgMsg) => deliver(msg.content.data);
}

/**
 * Attach to comms the kernel already has open, e.g. after a page reload,
 * and ask each for its state again.
 */
async function reattach(kernel: Kernel.IKernelConnection, deliver: (data: unknown) => void): Promise<void> {
  const reply = await kernel.requestCommInfo({ target_name: COMM_TARGET });
  if (reply.content.status !== 'ok') {
    return;
  }
  for (const commId of Object.keys(reply.content.comms)) {
    if (kernel.hasComm(commId)) {
      continue;
    }
    const comm = kernel.createComm(COMM_TARGET, commId);
    listen(comm, deliver);
    comm.send({ type: 'request_state' });
  }
}

function attach(kernel: Kernel.IKernelConnection, sessionContext: ISessionContext, onState: StateHandler): void {
  if (attached.has(kernel)) {
    return;
  }
  attached.add(kernel);
  const deliver = (data: unknown): void => {
    const state = asState(data);
    if (state) {
      onState({ kernelId: kernel.id, path: sessionContext.path }, state);
    }
  };
  // Targets survive kernel restarts: registering once per connection is enough.
  kernel.registerCommTarget(COMM_TARGET, (comm, msg) => {
    listen(comm, deliver);
    deliver(msg.content.data);
  });
  reattach(kernel, deliver).catch(() => undefined);
}

/** Follow a notebook's kernel, whichever it is, and report the states it publishes. */
export function followSession(sessionContext: ISessionContext, onState: StateHandler): void {
  const current = (): void => {
    const kernel = sessionContext.session?.kernel;
    if (kernel) {
      attach(kernel, sessionContext, onState);
    }
  };
  sessionContext.kernelChanged.connect(current);
  sessionContext.sessionChanged.connect(current);
  current();
}

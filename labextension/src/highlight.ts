/**
 * Give `%%mpc` cells the `text/x-mpc` MIME type, and keep it.
 *
 * The notebook assigns every code cell the kernel language's MIME type when
 * the kernel info (`language_info`) arrives, i.e. on open, on kernel change
 * and on restart. So the MIME type is re-applied whenever a cell's source or
 * MIME type changes and whenever the kernel changes.
 */
import type { ICellModel } from '@jupyterlab/cells';
import type { NotebookPanel } from '@jupyterlab/notebook';

import { isMpcSource, MPC_MIME } from './language';

/** Set the MIME type of one cell from its source. */
export function applyMimeType(cell: ICellModel, defaultMime: string): void {
  if (cell.type !== 'code') {
    return;
  }
  const wanted = isMpcSource(cell.sharedModel.getSource()) ? MPC_MIME : null;
  if (wanted && cell.mimeType !== wanted) {
    cell.mimeType = wanted;
  } else if (!wanted && cell.mimeType === MPC_MIME) {
    // The `%%mpc` line was removed: back to the kernel's language.
    cell.mimeType = defaultMime;
  }
}

/** Keep `%%mpc` cells of one notebook highlighted for the notebook's lifetime. */
export function trackNotebook(panel: NotebookPanel): void {
  const notebook = panel.content;
  const watched = new WeakSet<ICellModel>();

  const defaultMime = (): string => notebook.codeMimetype;

  const watch = (cell: ICellModel): void => {
    if (!watched.has(cell)) {
      watched.add(cell);
      cell.contentChanged.connect(() => applyMimeType(cell, defaultMime()));
      cell.mimeTypeChanged.connect(() => applyMimeType(cell, defaultMime()));
    }
    applyMimeType(cell, defaultMime());
  };

  const applyAll = (): void => {
    const model = notebook.model;
    if (!model) {
      return;
    }
    for (const cell of model.cells) {
      watch(cell);
    }
  };

  const connectModel = (): void => {
    const model = notebook.model;
    if (!model) {
      return;
    }
    model.cells.changed.connect(applyAll);
    // language_info lands in the metadata when the kernel info reply arrives.
    model.metadataChanged.connect(applyAll);
    applyAll();
  };

  notebook.modelChanged.connect(connectModel);
  connectModel();
  void panel.context.ready.then(applyAll);
  panel.sessionContext.kernelChanged.connect(applyAll);
  panel.sessionContext.statusChanged.connect(applyAll);
  // The notebook updates cell MIME types after its own handler of the kernel
  // info reply; a late pass catches anything the signals above did not.
  panel.sessionContext.ready.then(applyAll).catch(() => undefined);
}

/**
 * JupyterLab extension for mpc-jupyter:
 * - highlighting of `%%mpc` cells (language `mpc`, MIME type `text/x-mpc`);
 * - the "MPC consortium" side panel fed by the `mpc_jupyter.panel` comm.
 */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { IEditorLanguageRegistry } from '@jupyterlab/codemirror';
import { INotebookTracker } from '@jupyterlab/notebook';
import { LanguageSupport, StreamLanguage } from '@codemirror/language';

import { followSession } from './feed';
import { trackNotebook } from './highlight';
import { MPC_MIME, mpcParser } from './language';
import { ConsortiumPanel } from './panel';

const PLUGIN_PREFIX = 'mpc-jupyter-labextension';

const highlighting: JupyterFrontEndPlugin<void> = {
  id: `${PLUGIN_PREFIX}:highlighting`,
  description: 'Syntax highlighting for %%mpc cells.',
  autoStart: true,
  requires: [IEditorLanguageRegistry, INotebookTracker],
  activate: (_app: JupyterFrontEnd, languages: IEditorLanguageRegistry, notebooks: INotebookTracker) => {
    const support = new LanguageSupport(StreamLanguage.define(mpcParser));
    languages.addLanguage({
      name: 'mpc',
      displayName: 'MPC query',
      mime: MPC_MIME,
      support,
      load: async () => support
    });
    notebooks.forEach(trackNotebook);
    notebooks.widgetAdded.connect((_, panel) => trackNotebook(panel));
  }
};

const consortiumPanel: JupyterFrontEndPlugin<ConsortiumPanel> = {
  id: `${PLUGIN_PREFIX}:panel`,
  description: 'The MPC consortium side panel.',
  autoStart: true,
  requires: [INotebookTracker],
  activate: (app: JupyterFrontEnd, notebooks: INotebookTracker) => {
    const panel = new ConsortiumPanel();
    app.shell.add(panel, 'right', { rank: 900 });
    const follow = (notebook: { sessionContext: Parameters<typeof followSession>[0] }): void =>
      followSession(notebook.sessionContext, (source, state) => panel.updateState(source, state));
    notebooks.forEach(follow);
    notebooks.widgetAdded.connect((_, notebook) => follow(notebook));
    notebooks.currentChanged.connect((_, notebook) => {
      panel.currentPath = notebook ? notebook.sessionContext.path : null;
    });
    return panel;
  }
};

export default [highlighting, consortiumPanel];

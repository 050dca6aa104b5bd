/**
 * Playwright configuration for the galata browser tests.
 *
 * Chromium is the system one (Debian package `chromium`): Playwright's own
 * browser download does not work on our machines. MPC_CHROMIUM overrides it.
 * Global setup starts a small demo consortium (consortium.js) and the Jupyter
 * server's kernels find it through MPC_CONSORTIUM.
 */
const baseConfig = require('@jupyterlab/galata/lib/playwright-config');

const consortium = require('./consortium');

const PORT = Number(process.env.MPC_UI_PORT || 8888);

module.exports = {
  ...baseConfig,
  outputDir: 'test-results/artifacts',
  reporter: [['list'], ['html', { open: 'never', outputFolder: 'test-results/report' }]],
  retries: process.env.CI ? 1 : 0,
  globalSetup: require.resolve('./global-setup'),
  globalTeardown: require.resolve('./global-teardown'),
  use: {
    ...baseConfig.use,
    baseURL: `http://localhost:${PORT}`,
    video: 'off',
    trace: 'retain-on-failure',
    screenshot: 'only-on-failure',
    launchOptions: {
      executablePath: process.env.MPC_CHROMIUM || '/usr/bin/chromium',
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run'
      ]
    }
  },
  webServer: {
    // The server's log goes to a file (an artifact), not between the test results.
    command:
      'mkdir -p test-results && exec jupyter lab --config jupyter_server_test_config.py --allow-root ' +
      `--port ${PORT} --ServerApp.port_retries=0 >test-results/jupyter-server.log 2>&1`,
    url: `http://localhost:${PORT}/lab`,
    timeout: 120 * 1000,
    reuseExistingServer: Boolean(process.env.MPC_UI_REUSE_SERVER),
    env: consortium.ENABLED ? { ...process.env, MPC_CONSORTIUM: consortium.consortiumPath() } : { ...process.env }
  }
};

"""The site agent daemon: wires config, policy, data, planner, committee mesh and audit log."""

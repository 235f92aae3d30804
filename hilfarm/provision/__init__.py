"""`hilfarm device provision USER@HOST --profile NAME`: install and start an agent over SSH.

The device is probed first (architecture, the Python that will run the agent, free disk,
whether a systemd user manager answers), then everything goes under one prefix on the device
(default ``~/.local/share/hilfarm``)::

    agent-venv/   the virtual environment with hilfarm[agent,<runtime extras>]
    agent.env     HILFARM_CONTROLLER, HILFARM_ENROLL_TOKEN, HILFARM_PROFILE, HILFARM_AGENT_ID (mode 0600)
    agent/        the agent's data dir: artifact cache, state, its credential (mode 0700)
    uploads/      the wheel and profile files sent from here
    agent.log     agent.pid   (only when started with nohup)

The agent runs as a systemd user service (``~/.config/systemd/user/hilfarm-agent.service``,
rendered from deploy/systemd/hilfarm-agent.service) when the user's systemd answers, else
detached with nohup and a pid file. Running it again upgrades in place: the venv is kept when
its Python still fits, hilfarm is reinstalled, the agent restarted.

The admin's token never reaches the device: with it, provisioning asks the controller for a
single-use enrollment token bound to the device's profile, tags and agent id, valid for an hour,
and only that goes into agent.env (never on a command line). The agent exchanges it once for a
credential of its own. The agent runs as the login, which must not be root (``--allow-root``
says otherwise). Finally the command waits (bounded) until the agent has registered with the
controller and prints the device.

The parts: ``ssh`` (reaching the device), ``layout`` (where things go on it), ``facts`` (probing
it and refusing one the agent cannot run on), ``scripts`` (the shell scripts, the systemd user
unit rendered from deploy/systemd/hilfarm-agent.service, agent.env), ``plan`` (what to send and
run, in order) and ``command`` (`hilfarm device ...`).
"""

"""Device platforms this plugin adds to verl (see ``verl.plugin.platform``)."""

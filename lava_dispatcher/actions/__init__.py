"""Deploy, boot, test and command strategies and their actions (all plugins)."""

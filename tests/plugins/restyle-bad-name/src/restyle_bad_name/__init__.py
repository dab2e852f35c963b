"""A plugin that registers one expert with a bad name and one good one."""

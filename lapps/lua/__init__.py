"""The Lua side of lapps: runtimes, module loading, and the modules Lua sees."""

-- mqsmall: mqprobe's commands, in a service run with a small max_memory.
mqsmall = require("mqprobe")
return mqsmall

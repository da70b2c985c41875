-- second: a reporting standalone service for the depends tests.
second = require("reporter")("second")
return second

-- first: a reporting standalone service for the depends tests.
first = require("reporter")("first")
return first

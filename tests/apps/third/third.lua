-- third: a reporting standalone service for the depends tests.
third = require("reporter")("third")
return third

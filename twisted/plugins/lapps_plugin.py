from twisted.application.service import ServiceMaker

lapps = ServiceMaker("lapps", "lapps.tap", "A WebSocket application server for Lua services", "lapps")

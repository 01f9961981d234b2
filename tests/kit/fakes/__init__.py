"""In-memory fakes of Azure services that speak the documented wire format.

The real client code runs against them through an httpx transport, so what is tested is
the client's HTTP, not a mock of its methods.
"""

from shop.v1 import common_pb2 as _common_pb2
from shop.v1 import inventory_pb2 as _inventory_pb2
from shop.v1 import orders_pb2 as _orders_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PlaceOrderRequest(_message.Message):
    __slots__ = ("customer_id", "items", "idempotency_key")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    items: _containers.RepeatedCompositeFieldContainer[_common_pb2.OrderItem]
    idempotency_key: str
    def __init__(self, customer_id: _Optional[str] = ..., items: _Optional[_Iterable[_Union[_common_pb2.OrderItem, _Mapping]]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

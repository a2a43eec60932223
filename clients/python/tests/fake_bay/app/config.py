from dataclasses import dataclass, field
from functools import lru_cache
from typing import Optional


@dataclass
class ProxyConfig:
    enabled: bool = False
    http_proxy: Optional[str] = None
    https_proxy: Optional[str] = None
    no_proxy: Optional[str] = None


@dataclass
class GCConfig:
    instance_id: Optional[str] = None

    def get_instance_id(self) -> str:
        return self.instance_id or "bay"


@dataclass
class CargoConfig:
    default_size_limit_mb: int = 1024


@dataclass
class DriverConfig:
    type: str = "k8s"


@dataclass
class Settings:
    driver: DriverConfig = field(default_factory=DriverConfig)
    gc: GCConfig = field(default_factory=lambda: GCConfig("bay-fake-1"))
    cargo: CargoConfig = field(default_factory=lambda: CargoConfig(2048))
    proxy: ProxyConfig = field(default_factory=lambda: ProxyConfig(True, "http://proxy:3128"))


@lru_cache
def get_settings() -> Settings:
    return Settings()

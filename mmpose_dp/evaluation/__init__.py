from .mpii_pckh import MpiiPCKhAccuracy

__all__ = ['MpiiPCKhAccuracy']

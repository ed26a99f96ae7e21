"""Who may send which action, per OCPP version.

The schemas say what a message looks like, not who sends it; the direction
comes from the specifications' message lists:

* OCPP 1.6 Edition 2, §4 ("Operations Initiated by Charge Point") and §5
  ("Operations Initiated by Central System"), plus the OCPP 1.6 Security
  Whitepaper Edition 3 (messages of the security extension);
* OCPP 2.0.1 Part 2 and OCPP 2.1 Part 2, the "Messages" chapter and the
  use cases that define each message's sender.

``DataTransfer`` goes both ways in every version. ``NotifyPeriodicEventStream``
(OCPP 2.1) is the only SEND message: a charger sends it as ``[6, …]``, never as
a CALL, and it has no response.
"""

from __future__ import annotations

V16_CHARGER = frozenset(
    {
        "Authorize", "BootNotification", "DataTransfer", "DiagnosticsStatusNotification",
        "FirmwareStatusNotification", "Heartbeat", "MeterValues", "StartTransaction",
        "StatusNotification", "StopTransaction",
        # security extension
        "LogStatusNotification", "SecurityEventNotification", "SignCertificate",
        "SignedFirmwareStatusNotification",
    }
)
V16_CSMS = frozenset(
    {
        "CancelReservation", "ChangeAvailability", "ChangeConfiguration", "ClearCache",
        "ClearChargingProfile", "DataTransfer", "GetCompositeSchedule", "GetConfiguration",
        "GetDiagnostics", "GetLocalListVersion", "RemoteStartTransaction",
        "RemoteStopTransaction", "ReserveNow", "Reset", "SendLocalList", "SetChargingProfile",
        "TriggerMessage", "UnlockConnector", "UpdateFirmware",
        # security extension
        "CertificateSigned", "DeleteCertificate", "ExtendedTriggerMessage",
        "GetInstalledCertificateIds", "GetLog", "InstallCertificate", "SignedUpdateFirmware",
    }
)

V201_CHARGER = frozenset(
    {
        "Authorize", "BootNotification", "ClearedChargingLimit", "DataTransfer",
        "FirmwareStatusNotification", "Get15118EVCertificate", "GetCertificateStatus",
        "Heartbeat", "LogStatusNotification", "MeterValues", "NotifyChargingLimit",
        "NotifyCustomerInformation", "NotifyDisplayMessages", "NotifyEVChargingNeeds",
        "NotifyEVChargingSchedule", "NotifyEvent", "NotifyMonitoringReport", "NotifyReport",
        "PublishFirmwareStatusNotification", "ReportChargingProfiles",
        "ReservationStatusUpdate", "SecurityEventNotification", "SignCertificate",
        "StatusNotification", "TransactionEvent",
    }
)
V201_CSMS = frozenset(
    {
        "CancelReservation", "CertificateSigned", "ChangeAvailability", "ClearCache",
        "ClearChargingProfile", "ClearDisplayMessage", "ClearVariableMonitoring", "CostUpdated",
        "CustomerInformation", "DataTransfer", "DeleteCertificate", "GetBaseReport",
        "GetChargingProfiles", "GetCompositeSchedule", "GetDisplayMessages",
        "GetInstalledCertificateIds", "GetLocalListVersion", "GetLog", "GetMonitoringReport",
        "GetReport", "GetTransactionStatus", "GetVariables", "InstallCertificate",
        "PublishFirmware", "RequestStartTransaction", "RequestStopTransaction", "ReserveNow",
        "Reset", "SendLocalList", "SetChargingProfile", "SetDisplayMessage",
        "SetMonitoringBase", "SetMonitoringLevel", "SetNetworkProfile",
        "SetVariableMonitoring", "SetVariables", "TriggerMessage", "UnlockConnector",
        "UnpublishFirmware", "UpdateFirmware",
    }
)

V21_CHARGER = V201_CHARGER | frozenset(
    {
        "BatterySwap", "ClosePeriodicEventStream", "GetCertificateChainStatus",
        "NotifyDERAlarm", "NotifyDERStartStop", "NotifyPriorityCharging", "NotifySettlement",
        "OpenPeriodicEventStream", "PullDynamicScheduleUpdate", "ReportDERControl",
        "VatNumberValidation",
    }
)
V21_CSMS = V201_CSMS | frozenset(
    {
        "AFRRSignal", "AdjustPeriodicEventStream", "ChangeTransactionTariff",
        "ClearDERControl", "ClearTariffs", "GetDERControl", "GetPeriodicEventStream",
        "GetTariffs", "NotifyAllowedEnergyTransfer", "NotifyWebPaymentStarted",
        "RequestBatterySwap", "SetDERControl", "SetDefaultTariff", "UpdateDynamicSchedule",
        "UsePriorityCharging",
    }
)
V21_CHARGER_SEND = frozenset({"NotifyPeriodicEventStream"})

#: proto -> (charger CALL actions, CSMS CALL actions, charger SEND actions)
DIRECTIONS: dict[str, tuple[frozenset[str], frozenset[str], frozenset[str]]] = {
    "ocpp1.6": (V16_CHARGER, V16_CSMS, frozenset()),
    "ocpp2.0.1": (V201_CHARGER, V201_CSMS, frozenset()),
    "ocpp2.1": (V21_CHARGER, V21_CSMS, V21_CHARGER_SEND),
}

"""swtpm-compatible sockets: the TPM data channel and the PTM control channel.

Modules:

* :mod:`.endpoints`     -- listening/connected sockets from ``--server``/``--ctrl`` values
* :mod:`.data_framing`  -- where one TPM command ends; the send-command-header (mssim) framing
* :mod:`.data_channel`  -- a thread serving TPM commands to many data clients, one command at a time
* :mod:`.ctrl_framing`  -- receiving one ``CMD_*`` message (bounded waits, SCM_RIGHTS fds)
* :mod:`.ctrl_channel`  -- serves control messages to one control client at a time
* :mod:`.server`        -- runs both channels for one :class:`~vtpm_cuse.vtpm.Vtpm`
"""

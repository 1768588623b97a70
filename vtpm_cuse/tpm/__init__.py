"""The TPM 2.0 engine: marshalling, dispatcher, commands by spec area, state."""

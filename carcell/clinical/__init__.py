"""What a clinic would measure: blood counts, qPCR exposure and response by disease criteria."""

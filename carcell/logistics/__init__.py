"""Manufacturing, logistics, cost and access: from referral to infusion (docs/logistics.md)."""

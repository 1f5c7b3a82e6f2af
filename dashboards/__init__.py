"""Streamlit multipage app for tenant analysts: analytics and billing, tenant-scoped."""

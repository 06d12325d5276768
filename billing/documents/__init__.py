"""Invoices and credit notes as documents: PDFs, and the accountant's export."""

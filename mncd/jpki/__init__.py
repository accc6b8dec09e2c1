"""What JPKI means, independent of any card: certificate profile and checking signatures."""

"""kubewire.workload"""
